// matmul_blocks_few: y = x·Wᵀ for a few rows of x (decoding a token at a
// time), reading the packed weight W [rows, cols] where it lies, never
// expanding it (src/model/blocks.rs, launched by src/gpu/matmul_few.rs).
//
// W is laid out as for dequantize_blocks.wgsl: field i of `words` (BITS
// bits, 32 / BITS to a u32, lowest first), block i / 32's scale d (and for
// Q4_1 its minimum m) in `params`, w = (field - OFFSET) * d (+ m).
// x is [n, cols] and y [n, rows], row-major, n ≤ FEW.
//
// One workgroup per row r of W (a 2-D grid past 65,535 rows): its 64
// invocations walk the columns c = lid, lid + 64, ..., expand w[r, c] once
// and add w * x[k, c] to a private sum for each k < n; the 64 partial sums
// of each k are then added in a tree in workgroup memory, and invocation k
// writes y[k, r]. The Rust twin is `matmul_words_few` in src/model/blocks.rs
// (sums in f64); the sums' order differs, so they agree to rounding.
//
// BITS, OFFSET, PARAMS and FEW (the most rows of x, FEW_ROWS in
// src/model/blocks.rs) are `const` declarations the launcher puts before
// this text, one set per format. info = [rows, cols, n].

const LANES: u32 = 64u;

// Every binding is read_write although only the output is written: natively
// cubecl hands out tensors as slices of shared buffers, and one buffer bound
// read-only and read-write in one dispatch is a validation error (cubecl's
// own kernels declare theirs read-write for the same reason).
@group(0) @binding(0) var<storage, read_write> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

var<workgroup> partial: array<f32, FEW * LANES>; // [FEW, LANES]

@compute @workgroup_size(64)
fn matmul_blocks_few(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let rows = word(0u);
    let cols = word(1u);
    let n = word(2u);
    let r = wg.x + wg.y * groups.x; // the same for the whole workgroup
    var acc: array<f32, FEW>; // zero-initialised
    if (r < rows) {
        let per_word = 32u / BITS;
        let mask = (1u << BITS) - 1u;
        for (var c = lid; c < cols; c = c + LANES) {
            let i = r * cols + c;
            let field = (words[i / per_word] >> ((i % per_word) * BITS)) & mask;
            let b = i / 32u;
            var w = (f32(field) - OFFSET) * params[b * PARAMS];
            if (PARAMS == 2u) {
                w = w + params[b * PARAMS + 1u];
            }
            for (var k = 0u; k < n; k = k + 1u) {
                acc[k] = acc[k] + w * x[k * cols + c];
            }
        }
    }
    for (var k = 0u; k < FEW; k = k + 1u) {
        partial[k * LANES + lid] = acc[k];
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            for (var k = 0u; k < FEW; k = k + 1u) {
                partial[k * LANES + lid] = partial[k * LANES + lid] + partial[k * LANES + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (r < rows && lid < n) {
        y[lid * rows + r] = partial[lid * LANES];
    }
}
