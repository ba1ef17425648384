// lora_product: one of LoRA's rank-r products, with the scale and the
// dropout mask folded in (src/model/adapted.rs, launched by src/gpu/lora.rs).
//
//     c[m, k] = acc[m, k] + alpha * sum_j P[m, j] * Q[j, k]        (ACC)
//     c[m, k] =             alpha * sum_j P[m, j] * Q[j, k]        (no ACC)
//
// P is [M, J] and Q is [J, K], each read through its strides, so either can
// be a stored matrix or its transpose. One of LoRA's sides is always the rank
// r (8 by default), so every product here is skinny: x·A [N, r], u·B, the
// backward's dy·Bᵀ, uᵀ·dy, xᵀ·du and du·Aᵀ. One invocation per output
// value, summing its J terms in order; the dispatch is 2-D when the values
// need more than 65,535 workgroups, so the index is x + y * (workgroups
// along x) * 64.
//
// Dropout without a mask tensor: value e of the adapter's input x [N, d_in]
// (row-major index e) is kept when hash(e) >= threshold, where
//
//     hash(e) = pcg(pcg(e) ^ key)
//
// (pcg: the PCG-RXS-M-XS output hash of Jarzynski and Olano, "Hash
// Functions for GPU Rendering", JCGT 2020), key a u32 per step, micro-batch,
// layer and target, threshold = p * 2^32; the 1/(1 - p) rescale is in alpha.
// MASK 1 drops P's terms by P's stored index (P is x or xᵀ: the forward
// x·A and the backward xᵀ·du); MASK 2 drops output values by their index
// (the output is dx). The same key gives the same mask in every product,
// so nothing is stored between the forward and backward passes.
//
// info (u32): M, K, J, P's strides (m, j), Q's strides (j, k), MASK,
// threshold, key, alpha's bits, ACC.
// The Rust twin is `product` in src/model/adapted.rs; tests compare the two.

// Every binding is read_write although only `c` is written: natively cubecl
// hands out tensors as slices of shared buffers, and one buffer bound
// read-only and read-write in one dispatch is a validation error.
@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> info: array<vec4<u32>, 8>;

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
fn lora_product(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let rows = word(0u);
    let cols = word(1u);
    let i = gid.x + gid.y * groups.x * 64u;
    if (i >= rows * cols) {
        return;
    }
    let m = i / cols;
    let k = i % cols;
    let terms = word(2u);
    let p_m = word(3u);
    let p_j = word(4u);
    let q_j = word(5u);
    let q_k = word(6u);
    let mask = word(7u);
    let threshold = word(8u);
    let key = word(9u);
    var sum = 0.0;
    for (var j = 0u; j < terms; j = j + 1u) {
        let pi = m * p_m + j * p_j;
        if (mask == 1u && !kept(pi, threshold, key)) {
            continue;
        }
        sum = sum + p[pi] * q[j * q_j + k * q_k];
    }
    var out = bitcast<f32>(word(10u)) * sum;
    if (mask == 2u && !kept(i, threshold, key)) {
        out = 0.0;
    }
    if (word(11u) == 1u) {
        out = acc[i] + out;
    }
    c[i] = out;
}
