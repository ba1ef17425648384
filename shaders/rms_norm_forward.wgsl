// rms_norm_forward: RMSNorm of each row, as transformers' LlamaRMSNorm
// (src/model/norm.rs, launched by src/gpu/norm.rs).
//
// For row x of X [N, d] and the weight w [d]:
//
//     r = 1 / sqrt(sum_c x_c^2 / d + eps),      y_c = x_c * r * w_c
//
// One workgroup of 64 per row, each invocation summing every 64th square,
// then a tree sum in workgroup memory. The dispatch is 2-D when there are
// more than 65,535 rows.
//
// info (u32): rows, d, eps's bits.
// The Rust twin is `forward` in src/model/norm.rs; tests compare the two.

// Every binding is read_write although only `y` is written: natively cubecl
// hands out tensors as slices of shared buffers, and one buffer bound
// read-only and read-write in one dispatch is a validation error.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

const LANES: u32 = 64u;

var<workgroup> red: array<f32, 64>;

fn reduce_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (t < s) {
            red[t] = red[t] + red[t + s];
        }
    }
    return workgroupUniformLoad(&red[0]);
}

@compute @workgroup_size(64)
fn rms_norm_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = word(0u);
    let d = word(1u);
    let eps = bitcast<f32>(word(2u));
    let row = wid.x + wid.y * groups.x;
    if (row >= rows) {
        return;
    }
    let base = row * d;
    var squares = 0.0;
    for (var c = t; c < d; c = c + LANES) {
        let v = x[base + c];
        squares = squares + v * v;
    }
    let r = 1.0 / sqrt(reduce_sum(t, squares) / f32(d) + eps);
    for (var c = t; c < d; c = c + LANES) {
        y[base + c] = x[base + c] * r * w[c];
    }
}
