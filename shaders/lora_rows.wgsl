// lora_rows: both of an adapted projection's rank-r products for a row at a
// time, in one launch (src/model/adapted.rs, launched by src/gpu/lora.rs).
//
// For row m of P [M, J]:
//
//     u[m, :] = alpha1 * (mask1 ⊙ P[m, :]) · F1          F1 [J, R]  (stage 1)
//     c[m, :] = acc[m, :] + alpha2 * mask2 ⊙ (u[m, :] · F2)   F2 [R, K]  (stage 2)
//             (+ res[m, :])
//
// each factor read through its strides, so either can be a stored matrix or
// its transpose. Forward, P = x, F1 = A, F2 = B, acc = y: the adapted
// projection y + s·(m ⊙ x)·A·B, with u kept for the backward pass, and
// res the residual stream it is added to, if any. Backward,
// P = dL/dout, F1 = Bᵀ, F2 = Aᵀ: du and dx = s·m ⊙ (du·Aᵀ), with acc the
// base's part dL/dout·Wᵀ when the node holds the base (model::projection).
// Writes c [M, K] and u [M, R], each to its own buffer.
//
// One workgroup of 64 per row: stage 1 is R tree sums in workgroup memory
// (each invocation summing every 64th term), u stays in workgroup memory,
// and stage 2 gives each invocation every 64th value of the row, summing
// its R terms in order. The dispatch is 2-D when there are more than 65,535
// rows. Dropout's masks are lora_product.wgsl's hash of the value's stored
// index (stage 1 on P's, stage 2 on c's), never stored.
//
// info (u32): stage 1's then stage 2's, each as lora_product.wgsl's info
// (M, K, J, P's strides (m, j), Q's strides (j, k), MASK, threshold, key,
// alpha's bits, ACC); stage 2's P is u; then RES (1: res is added).
// The Rust twin is `rows` in src/model/adapted.rs (the two products of
// `product`, stage 1 summed in order; c's values then u's); tests compare
// the two.

// Every binding is read_write although only `c` and `u` are written:
// natively cubecl hands out tensors as slices of shared buffers, and one
// buffer bound read-only and read-write in one dispatch is a validation
// error.
@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> f1: array<f32>;
@group(0) @binding(2) var<storage, read_write> f2: array<f32>;
@group(0) @binding(3) var<storage, read_write> acc: array<f32>;
@group(0) @binding(4) var<storage, read_write> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> u: array<f32>;
@group(0) @binding(7) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

const LANES: u32 = 64u;
const MAX_RANK: u32 = 256u;

var<workgroup> us: array<f32, MAX_RANK>;
var<workgroup> red: array<f32, 64>;

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let h = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (h >> 22u) ^ h;
}

fn kept(e: u32, threshold: u32, key: u32) -> bool {
    return pcg(pcg(e) ^ key) >= threshold;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (t < s) {
            red[t] = red[t] + red[t + s];
        }
    }
    let total = workgroupUniformLoad(&red[0]);
    // No invocation may start the next sum before all have read this one.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn lora_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = word(0u);
    let rank = word(1u);
    let m = wid.x + wid.y * groups.x;
    if (m >= rows) {
        return;
    }
    // Stage 1: u[m, k] for each k < R.
    let terms = word(2u);
    for (var k = 0u; k < rank; k = k + 1u) {
        var partial = 0.0;
        for (var j = t; j < terms; j = j + LANES) {
            let pi = m * word(3u) + j * word(4u);
            if (word(7u) == 1u && !kept(pi, word(8u), word(9u))) {
                continue;
            }
            partial = partial + p[pi] * f1[j * word(5u) + k * word(6u)];
        }
        let total = reduce_sum(t, partial);
        if (t == 0u) {
            us[k] = bitcast<f32>(word(10u)) * total;
        }
    }
    workgroupBarrier();
    // Stage 2: c[m, :] from u[m, :].
    let cols = word(13u);
    for (var col = t; col < cols; col = col + LANES) {
        var sum = 0.0;
        for (var k = 0u; k < rank; k = k + 1u) {
            sum = sum + us[k] * f2[k * word(17u) + col * word(18u)];
        }
        let i = m * cols + col;
        var out = bitcast<f32>(word(22u)) * sum;
        if (word(19u) == 2u && !kept(i, word(20u), word(21u))) {
            out = 0.0;
        }
        if (word(23u) == 1u) {
            out = acc[i] + out;
        }
        if (word(24u) == 1u) {
            out = out + res[i];
        }
        c[i] = out;
    }
    for (var k = t; k < rank; k = k + LANES) {
        u[m * rank + k] = us[k];
    }
}
