// rope: rotary position embedding, rotate-half as transformers' Llama, on
// a projection's output in its own layout (src/model/rope.rs, launched by
// src/gpu/rope.rs).
//
// x is [N, W]: row r is position r % T of one of the sequences, W = heads ·
// hd. cos and sin are [T, hd]; rotate-half's minus is already in the first
// half of sin. With p the same column in the other half of c's head:
//
//     forward   y[c] = x[c] * cos[c] + x[p] * sin[c]
//     inverse   y[c] = x[c] * cos[c] + x[p] * sin[p]
//
// The inverse is the forward's transpose (cos·I + sin·swap, both diagonal
// but for the swap), so the backward pass is this kernel on the output's
// gradient. A launch may rotate two tensors, x1 into y1 and x2 into y2 (q
// and k, of widths W1 and W2, the same rows and tables): values past x1's
// are x2's. One invocation per value; the dispatch is 2-D when the values
// need more than 65,535 workgroups, so the index is x + y * (workgroups
// along x) * 64.
//
// info (u32): x1's values (N·W1), W1, hd, T, inverse (0 or 1), x2's values
// (0 for one tensor; x2 and y2 are then unused), W2.
// The Rust twin is `rotate` in src/model/rope.rs (each tensor apart);
// tests compare the two.

// Every binding is read_write although only `y1` and `y2` are written:
// natively cubecl hands out tensors as slices of shared buffers, and one
// buffer bound read-only and read-write in one dispatch is a validation
// error.
@group(0) @binding(0) var<storage, read_write> x1: array<f32>;
@group(0) @binding(1) var<storage, read_write> x2: array<f32>;
@group(0) @binding(2) var<storage, read_write> cos_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> sin_t: array<f32>;
@group(0) @binding(4) var<storage, read_write> y1: array<f32>;
@group(0) @binding(5) var<storage, read_write> y2: array<f32>;
@group(0) @binding(6) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

@compute @workgroup_size(64)
fn rope(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let g = gid.x + gid.y * groups.x * 64u;
    let first = word(0u);
    if (g >= first + word(5u)) {
        return;
    }
    // The tensor, and the value's index in it.
    let second = g >= first;
    var e = g;
    var width = word(1u);
    if (second) {
        e = g - first;
        width = word(6u);
    }
    let hd = word(2u);
    let len = word(3u);
    let half = hd / 2u;
    let c = e % width % hd;
    var p = c + half;
    if (c >= half) {
        p = c - half;
    }
    let table = (e / width % len) * hd;
    var s = sin_t[table + c];
    if (word(4u) == 1u) {
        s = sin_t[table + p];
    }
    if (second) {
        y2[e] = x2[e] * cos_t[table + c] + x2[e - c + p] * s;
    } else {
        y1[e] = x1[e] * cos_t[table + c] + x1[e - c + p] * s;
    }
}
