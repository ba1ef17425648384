// attention_forward: causal grouped-query attention for training, one
// workgroup per query row (src/model/attention.rs, launched by
// src/gpu/attention.rs).
//
// For query row i of head h in sequence b (q [B, T, H, hd]) and the keys
// and values of its group's head g = h / (H / KV) (k, v [B, T, KV, hd]):
//
//     s_j = scale * q_i · k_j   for j <= i
//     o_i = sum_j softmax(s)_j * v_j,      lse_i = log sum_j exp(s_j)
//
// The keys are taken in tiles of 64, one per invocation, with the online
// softmax of Milakov and Gimelshein ("Online normalizer calculation for
// softmax", 2018) as FlashAttention does: a running maximum m and sum l,
// the partial output rescaled by exp(m_old - m_new) at each tile. Each
// invocation keeps head_dim / 64 (at most 4) of the output's values. It
// writes o [B, T, H, hd] and lse [B, T, H], which the backward kernels
// read, each to a buffer of its own. The dispatch is 2-D when there are more than
// 65,535 rows.
//
// Rows are numbered (b * T + i) * H + h, as q lies. Key j of the group
// lies at ((b * T + j) * KV + g) * hd.
//
// info (u32): rows (B·T·H), H, KV, T, hd, scale's bits.
// The Rust twin is `forward` in src/model/attention.rs.

// Every binding is read_write although only `o` and `lse` are written:
// natively cubecl hands out tensors as slices of shared buffers, and one
// buffer bound read-only and read-write in one dispatch is a validation
// error.
@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

const LANES: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
// Below any score: exp(NONE - m) is 0 for every finite m.
const NONE: f32 = -3.0e38;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> ps: array<f32, 64>;
var<workgroup> red: array<f32, 64>;

fn reduce_max(t: u32, x: f32) -> f32 {
    red[t] = x;
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
    }
    let r = workgroupUniformLoad(&red[0]);
    // No invocation may start the next reduction before all have read this one.
    workgroupBarrier();
    return r;
}

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
fn attention_forward(
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
    for (var d = t; d < hd; d = d + LANES) {
        qs[d] = q[row * hd + d];
    }
    workgroupBarrier();
    var m = NONE;
    var l = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var tile = 0u; tile <= i; tile = tile + LANES) {
        let j = tile + t;
        var s = NONE;
        if (j <= i) {
            var dot = 0.0;
            for (var d = 0u; d < hd; d = d + 1u) {
                dot = dot + qs[d] * k[kv_base + j * stride + d];
            }
            s = scale * dot;
        }
        let m_new = max(m, reduce_max(t, s));
        var p = 0.0;
        if (j <= i) {
            p = exp(s - m_new);
        }
        ps[t] = p;
        let sum = reduce_sum(t, p);
        let rescale = exp(m - m_new);
        l = l * rescale + sum;
        let count = min(LANES, i + 1u - tile);
        for (var c = 0u; c < 4u; c = c + 1u) {
            let d = t + c * LANES;
            if (d < hd) {
                var a = acc[c] * rescale;
                for (var jj = 0u; jj < count; jj = jj + 1u) {
                    a = a + ps[jj] * v[kv_base + (tile + jj) * stride + d];
                }
                acc[c] = a;
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    for (var c = 0u; c < 4u; c = c + 1u) {
        let d = t + c * LANES;
        if (d < hd) {
            o[row * hd + d] = acc[c] / l;
        }
    }
    if (t == 0u) {
        lse[row] = m + log(l);
    }
}
