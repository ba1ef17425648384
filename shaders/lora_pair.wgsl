// lora_pair: two of LoRA's rank-r products in one launch (src/model/adapted.rs,
// launched by src/gpu/lora.rs): the backward pass's two sums over the rows,
// dB = uᵀ·g and dA = s·(m ⊙ x)ᵀ·du, each to its own buffer.
//
// Each is lora_product.wgsl's product, with the same info, strides and
// dropout hash:
//
//     c1 = alpha1 * P1·Q1,     c2 = alpha2 * P2·Q2
//
// One invocation per output value of either: the first M1·K1 invocations
// give c1, the rest c2, each summing its J terms in order. The dispatch is
// 2-D when the values need more than 65,535 workgroups, so the index is
// x + y * (workgroups along x) * 64.
//
// info (u32): the first product's 12 words, then the second's, each as
// lora_product.wgsl's (M, K, J, P's strides (m, j), Q's strides (j, k),
// MASK, threshold, key, alpha's bits, ACC (0 here)).
// The Rust twin is `pair` in src/model/adapted.rs (c1's values then c2's);
// tests compare the two.

// Every binding is read_write although only `c1` and `c2` are written:
// natively cubecl hands out tensors as slices of shared buffers, and one
// buffer bound read-only and read-write in one dispatch is a validation
// error.
@group(0) @binding(0) var<storage, read_write> p1: array<f32>;
@group(0) @binding(1) var<storage, read_write> q1: array<f32>;
@group(0) @binding(2) var<storage, read_write> p2: array<f32>;
@group(0) @binding(3) var<storage, read_write> q2: array<f32>;
@group(0) @binding(4) var<storage, read_write> c1: array<f32>;
@group(0) @binding(5) var<storage, read_write> c2: array<f32>;
@group(0) @binding(6) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let h = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (h >> 22u) ^ h;
}

fn kept(e: u32, threshold: u32, key: u32) -> bool {
    return pcg(pcg(e) ^ key) >= threshold;
}

@compute @workgroup_size(64)
fn lora_pair(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = word(0u) * word(1u);
    let i = gid.x + gid.y * groups.x * 64u;
    if (i >= first + word(12u) * word(13u)) {
        return;
    }
    // The product's words start at w; its value is v.
    var w = 0u;
    var v = i;
    if (i >= first) {
        w = 12u;
        v = i - first;
    }
    let cols = word(w + 1u);
    let m = v / cols;
    let k = v % cols;
    let terms = word(w + 2u);
    let p_m = word(w + 3u);
    let p_j = word(w + 4u);
    let q_j = word(w + 5u);
    let q_k = word(w + 6u);
    let mask = word(w + 7u);
    let threshold = word(w + 8u);
    let key = word(w + 9u);
    var sum = 0.0;
    for (var j = 0u; j < terms; j = j + 1u) {
        let pi = m * p_m + j * p_j;
        if (mask == 1u && !kept(pi, threshold, key)) {
            continue;
        }
        let qi = j * q_j + k * q_k;
        if (w == 0u) {
            sum = sum + p1[pi] * q1[qi];
        } else {
            sum = sum + p2[pi] * q2[qi];
        }
    }
    var out = bitcast<f32>(word(w + 10u)) * sum;
    if (mask == 2u && !kept(v, threshold, key)) {
        out = 0.0;
    }
    if (w == 0u) {
        c1[v] = out;
    } else {
        c2[v] = out;
    }
}
