// dequantize_blocks: a frozen base weight, kept packed on the GPU, expanded
// to f32 for one matrix product (src/model/blocks.rs, launched by
// src/gpu/dequantize.rs).
//
// Value i of the row-major [rows, cols] matrix is field i of `words`, fields
// of BITS bits packed 32 / BITS to a u32, lowest bits first; each run of 32
// values is a block with PARAMS f32 parameters in `params`: its scale d, and
// for Q4_1 its minimum m. Then
//
//     x[i] = (field(i) - OFFSET) * d(i / 32)  (+ m(i / 32) when PARAMS == 2)
//
// which is ggml's dequantize_row_q8_0 (BITS 8, OFFSET 128: the field is
// q + 128), _q4_0 (BITS 4, OFFSET 8) and _q4_1 (BITS 4, OFFSET 0, PARAMS 2),
// value for value. The Rust twin is `dequantize_words` in
// src/model/blocks.rs; tests compare the two.
//
// BITS, OFFSET and PARAMS are `const` declarations the launcher puts before
// this text, one set per format. One invocation per value; the dispatch is
// 2-D when the values need more than 65,535 workgroups, so the index is
// x + y * (workgroups along x) * 256. Word 0 of info is the number of values.

// Every binding is read_write although only the output is written: natively
// cubecl hands out tensors as slices of shared buffers, and one buffer bound
// read-only and read-write in one dispatch is a validation error (cubecl's
// own kernels declare theirs read-write for the same reason).
@group(0) @binding(0) var<storage, read_write> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;
@group(0) @binding(3) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

@compute @workgroup_size(256)
fn dequantize_blocks(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= word(0u)) {
        return;
    }
    let per_word = 32u / BITS;
    let mask = (1u << BITS) - 1u;
    let field = (words[i / per_word] >> ((i % per_word) * BITS)) & mask;
    let block = i / 32u;
    var x = (f32(field) - OFFSET) * params[block * PARAMS];
    if (PARAMS == 2u) {
        x = x + params[block * PARAMS + 1u];
    }
    values[i] = x;
}
