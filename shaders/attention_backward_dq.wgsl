// attention_backward_dq: the gradient reaching the queries of
// attention_forward.wgsl, one workgroup per query row (src/model/attention.rs,
// launched by src/gpu/attention.rs).
//
// For query row i (its head's keys and values as in the forward pass), with
// dO the gradient of the output, o and lse the forward pass's:
//
//     D_i   = dO_i · o_i
//     p_ij  = exp(scale * q_i · k_j - lse_i)           for j <= i
//     ds_ij = p_ij * (dO_i · v_j - D_i)
//     dq_i  = scale * sum_j ds_ij * k_j
//
// (FlashAttention-2's backward, Dao 2023), keys in tiles of 64, one per
// invocation. Writes dq [B, T, H, hd] and D [B, T, H], which
// attention_backward_dkv.wgsl reads. `o` and `lse` are the forward kernel's
// outputs.
//
// Rows are numbered (b * T + i) * H + h, as q lies; key j of the group
// lies at ((b * T + j) * KV + g) * hd.
//
// info (u32): rows (B·T·H), H, KV, T, hd, scale's bits.
// The Rust twin is `backward` in src/model/attention.rs.

// Every binding is read_write although only `dq` and `big_d` are written:
// natively cubecl hands out tensors as slices of shared buffers, and one
// buffer bound read-only and read-write in one dispatch is a validation
// error.
@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<storage, read_write> d_o: array<f32>;
@group(0) @binding(6) var<storage, read_write> dq: array<f32>;
@group(0) @binding(7) var<storage, read_write> big_d: array<f32>;
@group(0) @binding(8) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

const LANES: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> dos: array<f32, MAX_HEAD_DIM>;
var<workgroup> dss: array<f32, 64>;
var<workgroup> red: array<f32, 64>;

fn reduce_sum(t: u32, x: f32) -> f32 {
    red[t] = x;
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (t < s) {
            red[t] = red[t] + red[t + s];
        }
    }
    let r = workgroupUniformLoad(&red[0]);
    // No invocation may start the next reduction before all have read this one.
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn attention_backward_dq(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = word(0u);
    let heads = word(1u);
    let kv_heads = word(2u);
    let len = word(3u);
    let hd = word(4u);
    let scale = bitcast<f32>(word(5u));
    let row = wid.x + wid.y * groups.x;
    if (row >= rows) {
        return;
    }
    let bi = row / heads; // b * T + i
    let i = bi % len;
    let b = bi / len;
    let g = (row % heads) / (heads / kv_heads);
    // Key j of the group starts at kv_base + j * stride.
    let kv_base = (b * len * kv_heads + g) * hd;
    let stride = kv_heads * hd;
    var partial = 0.0;
    for (var d = t; d < hd; d = d + LANES) {
        qs[d] = q[row * hd + d];
        dos[d] = d_o[row * hd + d];
        partial = partial + d_o[row * hd + d] * o[row * hd + d];
    }
    let d_i = reduce_sum(t, partial);
    let lse_i = lse[row];
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var tile = 0u; tile <= i; tile = tile + LANES) {
        let j = tile + t;
        var ds = 0.0;
        if (j <= i) {
            var s = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < hd; d = d + 1u) {
                s = s + qs[d] * k[kv_base + j * stride + d];
                dp = dp + dos[d] * v[kv_base + j * stride + d];
            }
            ds = exp(scale * s - lse_i) * (dp - d_i);
        }
        dss[t] = ds;
        workgroupBarrier();
        let count = min(LANES, i + 1u - tile);
        for (var c = 0u; c < 4u; c = c + 1u) {
            let d = t + c * LANES;
            if (d < hd) {
                var a = acc[c];
                for (var jj = 0u; jj < count; jj = jj + 1u) {
                    a = a + dss[jj] * k[kv_base + (tile + jj) * stride + d];
                }
                acc[c] = a;
            }
        }
        workgroupBarrier();
    }
    for (var c = 0u; c < 4u; c = c + 1u) {
        let d = t + c * LANES;
        if (d < hd) {
            dq[row * hd + d] = scale * acc[c];
        }
    }
    if (t == 0u) {
        big_d[row] = d_i;
    }
}
