// join: copies up to six tensors into their places in one flat vector, in
// place (src/train/join.rs, launched by src/gpu/join.rs): the adapter
// factors' gradients into the flat optimizer's vector, six per launch
// rather than one copy each.
//
// The parts lie back to back in `flat` from `start`: part i's values go to
// flat[start + begin_i ..], begin_i the sum of the earlier parts' lengths.
// A slot with length 0 is bound but never read. One invocation per value
// of all six; the dispatch is 2-D when they need more than 65,535
// workgroups, so the index is x + y * (workgroups along x) * 64. Six parts,
// the flat vector and info are eight storage buffers: WebGPU's default
// limit per shader stage.
//
// info (u32): start, then each part's end in the run of six (end_0, ...,
// end_5; end_5 is the count of values).
// The Rust twin is `join_into` in src/train/join.rs; tests compare the two.

// Every binding is read_write although only `flat` is written: natively
// cubecl hands out tensors as slices of shared buffers, and one buffer bound
// read-only and read-write in one dispatch is a validation error.
@group(0) @binding(0) var<storage, read_write> p0: array<f32>;
@group(0) @binding(1) var<storage, read_write> p1: array<f32>;
@group(0) @binding(2) var<storage, read_write> p2: array<f32>;
@group(0) @binding(3) var<storage, read_write> p3: array<f32>;
@group(0) @binding(4) var<storage, read_write> p4: array<f32>;
@group(0) @binding(5) var<storage, read_write> p5: array<f32>;
@group(0) @binding(6) var<storage, read_write> flat: array<f32>;
@group(0) @binding(7) var<storage, read_write> info: array<u32>;

@compute @workgroup_size(64)
fn join(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let e = gid.x + gid.y * groups.x * 64u;
    if (e >= info[6]) {
        return;
    }
    var v = 0.0;
    if (e < info[1]) {
        v = p0[e];
    } else if (e < info[2]) {
        v = p1[e - info[1]];
    } else if (e < info[3]) {
        v = p2[e - info[2]];
    } else if (e < info[4]) {
        v = p3[e - info[3]];
    } else if (e < info[5]) {
        v = p4[e - info[4]];
    } else {
        v = p5[e - info[5]];
    }
    flat[info[0] + e] = v;
}
