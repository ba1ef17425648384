// swiglu_backward: both gradients of swiglu_forward.wgsl's
// y = g * sigmoid(g) * u for the output's gradient dy (src/model/swiglu.rs,
// launched by src/gpu/swiglu.rs):
//
//     du = dy * g * s,     dg = dy * u * s * (1 + g * (1 - s)),     s = sigmoid(g)
//
// written to one buffer, dg's N·F values then du's. One invocation per
// value; the dispatch is 2-D when the values need more than 65,535
// workgroups, so the index is x + y * (workgroups along x) * 64.
//
// info (u32): values (N·F).
// The Rust twin is the CPU's operation in src/model/swiglu.rs; tests compare
// the two.

// Every binding is read_write although only `grads` is written: natively
// cubecl hands out tensors as slices of shared buffers, and one buffer bound
// read-only and read-write in one dispatch is a validation error.
@group(0) @binding(0) var<storage, read_write> g: array<f32>;
@group(0) @binding(1) var<storage, read_write> u: array<f32>;
@group(0) @binding(2) var<storage, read_write> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
@group(0) @binding(4) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

@compute @workgroup_size(64)
fn swiglu_backward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let n = word(0u);
    let e = gid.x + gid.y * groups.x * 64u;
    if (e >= n) {
        return;
    }
    let x = g[e];
    let s = sigmoid(x);
    let d = dy[e];
    grads[e] = d * u[e] * s * (1.0 + x * (1.0 - s));
    grads[n + e] = d * x * s;
}
