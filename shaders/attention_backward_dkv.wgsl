// attention_backward_dkv: the gradients reaching the keys and values of
// attention_forward.wgsl, one workgroup per key row (src/model/attention.rs,
// launched by src/gpu/attention.rs after attention_backward_dq.wgsl).
//
// For key row j of group head g in sequence b, over every query head h of
// the group (h / (H / KV) = g) and every query i >= j:
//
//     p_ij  = exp(scale * q_i · k_j - lse_i)
//     ds_ij = p_ij * (dO_i · v_j - D_i)
//     dv_j  = sum_{h, i} p_ij * dO_i
//     dk_j  = scale * sum_{h, i} ds_ij * q_i
//
// with lse from the forward pass and D from attention_backward_dq.wgsl,
// queries in tiles of 64, one per invocation. Writes dk and dv
// [B, T, KV, hd].
//
// Key rows are numbered (b * T + j) * KV + g, as k lies; query i of head h
// is row (b * T + i) * H + h of q, dO, lse and D.
//
// info (u32): rows of k (B·T·KV), H, KV, T, hd, scale's bits.
// The Rust twin is `backward` in src/model/attention.rs.

// Every binding is read_write although only `dk` and `dv` are written:
// natively cubecl hands out tensors as slices of shared buffers, and one
// buffer bound read-only and read-write in one dispatch is a validation
// error.
@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_o: array<f32>;
@group(0) @binding(5) var<storage, read_write> big_d: array<f32>;
@group(0) @binding(6) var<storage, read_write> dk: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;
@group(0) @binding(8) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

const LANES: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;

var<workgroup> ks: array<f32, MAX_HEAD_DIM>;
var<workgroup> vs: array<f32, MAX_HEAD_DIM>;
var<workgroup> ps: array<f32, 64>;
var<workgroup> dss: array<f32, 64>;

@compute @workgroup_size(64)
fn attention_backward_dkv(
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
    let row = wid.x + wid.y * groups.x; // (b * T + j) * KV + g
    if (row >= rows) {
        return;
    }
    let g = row % kv_heads;
    let bj = row / kv_heads; // b * T + j
    let j = bj % len;
    let b = bj / len;
    let group = heads / kv_heads;
    for (var d = t; d < hd; d = d + LANES) {
        ks[d] = k[row * hd + d];
        vs[d] = v[row * hd + d];
    }
    workgroupBarrier();
    var dk_acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var dv_acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var h = g * group; h < (g + 1u) * group; h = h + 1u) {
        // Query i of head h is row (b * T + i) * H + h = q_base + i * H.
        let q_base = b * len * heads + h;
        for (var tile = j; tile < len; tile = tile + LANES) {
            let i = tile + t;
            var p = 0.0;
            var ds = 0.0;
            if (i < len) {
                let qr = q_base + i * heads;
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < hd; d = d + 1u) {
                    s = s + q[qr * hd + d] * ks[d];
                    dp = dp + d_o[qr * hd + d] * vs[d];
                }
                p = exp(scale * s - lse[qr]);
                ds = p * (dp - big_d[qr]);
            }
            ps[t] = p;
            dss[t] = ds;
            workgroupBarrier();
            let count = min(LANES, len - tile);
            for (var c = 0u; c < 4u; c = c + 1u) {
                let d = t + c * LANES;
                if (d < hd) {
                    var a = dv_acc[c];
                    var e = dk_acc[c];
                    for (var ii = 0u; ii < count; ii = ii + 1u) {
                        let qr = q_base + (tile + ii) * heads;
                        a = a + ps[ii] * d_o[qr * hd + d];
                        e = e + dss[ii] * q[qr * hd + d];
                    }
                    dv_acc[c] = a;
                    dk_acc[c] = e;
                }
            }
            workgroupBarrier();
        }
    }
    for (var c = 0u; c < 4u; c = c + 1u) {
        let d = t + c * LANES;
        if (d < hd) {
            dk[row * hd + d] = scale * dk_acc[c];
            dv[row * hd + d] = dv_acc[c];
        }
    }
}
