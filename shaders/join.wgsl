// join: copies up to six tensors into their places in one flat vector, in
// place (src/train/join.rs, launched by src/gpu/join.rs): the adapter
// factors' gradients into the flat optimizer's vector, six per launch
// rather than one copy each.
//
// The parts lie back to back in `flat` from `start`: part i's values go to
// flat[start + begin_i ..], begin_i the sum of the earlier parts' lengths.
// A slot with length 0 is bound but never read. One invocation per value
// of all six; the dispatch is 2-D when they need more than 65,535
// workgroups, so the index is x + y * (workgroups along x) * 64. Six parts and
// the flat vector are seven of the eight storage buffers WebGPU allows a
// shader stage by default.
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
@group(0) @binding(7) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

@compute @workgroup_size(64)
fn join(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let e = gid.x + gid.y * groups.x * 64u;
    if (e >= word(6u)) {
        return;
    }
    var v = 0.0;
    if (e < word(1u)) {
        v = p0[e];
    } else if (e < word(2u)) {
        v = p1[e - word(1u)];
    } else if (e < word(3u)) {
        v = p2[e - word(2u)];
    } else if (e < word(4u)) {
        v = p3[e - word(3u)];
    } else if (e < word(5u)) {
        v = p4[e - word(4u)];
    } else {
        v = p5[e - word(5u)];
    }
    flat[word(0u) + e] = v;
}
