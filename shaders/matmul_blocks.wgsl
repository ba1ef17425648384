// matmul_blocks: a product with a packed weight W [rows, cols], read where it
// lies and never expanded to a matrix of its own (src/model/blocks.rs,
// launched by src/gpu/matmul_blocks.rs):
//
//     TRANS = 1:  c [M, rows] = a [M, cols] · Wᵀ    (x·Wᵀ, the forward pass)
//     TRANS = 0:  c [M, cols] = a [M, rows] · W     (dY·W, the input's gradient)
//
// so a frozen base's product is one launch, as a dense weight's is, where
// expanding it first (dequantize_blocks.wgsl) and multiplying was two.
// W may be several weights' rows joined (q, k and v; gate and up), and then
// the rows' side is in parts: each part of c (x·Wᵀ), or of a (dY·W), is a
// row-major matrix of its own, bound apart (c, part1, part2), so one launch
// makes each weight's product, or the sum of their gradients.
// W is laid out as for dequantize_blocks.wgsl: field i of `words` (BITS
// bits, 32 / BITS to a u32, lowest first), block i / 32's scale d (and for
// Q4_1 its minimum m) in `params`, w = (field - OFFSET) * d (+ m).
// a and c are row-major and dense.
//
// Parts: W's rows [0, s1) are part 0, [s1, s2) part 1, [s2, rows) part 2
// (s1 = s2 = rows: one part). With TRANS = 1 part p of c's columns is
// written to c, part1 or part2 as [M, its rows]; with TRANS = 0 part p of
// a's columns is read from a, part1 or part2 so. Unused parts are bound to
// buffers of their own, never read or written.
//
// Written as c [M, N] = a [M, K] · B [K, N] with B = Wᵀ or W. Each
// workgroup of 256 computes a 64 × 64 tile of c, each invocation 4 × 4 of
// its values (rows ty + 16 i, columns tx + 16 j): over K in steps of 16,
// the workgroup copies a's [64, 16] tile and expands B's [16, 64] tile into
// workgroup memory (each value of W once per tile), then each invocation
// adds its 16 products per value. Values past an edge read as 0 and are not
// written. The grid is (N / 64, M / 64) tiles, rounded up.
//
// BITS, OFFSET and PARAMS are `const` declarations the launcher puts before
// this text, one set per format. info = [M, N, K, cols (W's), TRANS, s1,
// s2].
// The Rust twin is `matmul_words` in src/model/blocks.rs (the expanded
// matrix's product, each sum in f64); the kernel sums in f32 in another
// order, so they agree to rounding.

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;
// A tile's row in workgroup memory, one longer than TILE, so that the
// invocations storing the 16 k of one row of a tile hit different banks.
const STRIDE: u32 = 65u;

// Every binding is read_write although only `c` is written: natively
// cubecl hands out tensors as slices of shared buffers, and one buffer
// bound read-only and read-write in one dispatch is a validation error.
@group(0) @binding(0) var<storage, read_write> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> part1: array<f32>;
@group(0) @binding(5) var<storage, read_write> part2: array<f32>;
@group(0) @binding(6) var<uniform> info: array<vec4<u32>, 8>;

// Word i of info (src/gpu/kernel.rs packs it as u32s, four to a vec4).
fn word(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}

var<workgroup> a_tile: array<f32, 1040>; // [DEPTH, STRIDE]: a[m0 + m, k0 + k] at k * STRIDE + m
var<workgroup> b_tile: array<f32, 1040>; // [DEPTH, STRIDE]: B[k0 + k, n0 + n] at k * STRIDE + n

// Value i of W, row-major.
fn weight(i: u32) -> f32 {
    let per_word = 32u / BITS;
    let mask = (1u << BITS) - 1u;
    let field = (words[i / per_word] >> ((i % per_word) * BITS)) & mask;
    let b = i / 32u;
    var w = (f32(field) - OFFSET) * params[b * PARAMS];
    if (PARAMS == 2u) {
        w = w + params[b * PARAMS + 1u];
    }
    return w;
}

// Column j of a matrix `width` wide in parts: (which part, its first
// column, its width).
fn part_of(j: u32, width: u32) -> vec3<u32> {
    let s1 = word(5u);
    let s2 = word(6u);
    if (j < s1) {
        return vec3<u32>(0u, 0u, s1);
    }
    if (j < s2) {
        return vec3<u32>(1u, s1, s2 - s1);
    }
    return vec3<u32>(2u, s2, width - s2);
}

// a[m, k] of a [M, K] read in parts (TRANS = 0).
fn a_parts(m: u32, k: u32, k_len: u32) -> f32 {
    let p = part_of(k, k_len);
    let i = m * p.z + k - p.y;
    if (p.x == 0u) {
        return a[i];
    }
    if (p.x == 1u) {
        return part1[i];
    }
    return part2[i];
}

// c[m, n] = v of a [M, N] written in parts (TRANS = 1).
fn c_parts(m: u32, n: u32, n_len: u32, v: f32) {
    let p = part_of(n, n_len);
    let i = m * p.z + n - p.y;
    if (p.x == 0u) {
        c[i] = v;
    } else if (p.x == 1u) {
        part1[i] = v;
    } else {
        part2[i] = v;
    }
}

@compute @workgroup_size(256)
fn matmul_blocks(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let m_len = word(0u);
    let n_len = word(1u);
    let k_len = word(2u);
    let cols = word(3u);
    let trans = word(4u);
    let m0 = wg.y * TILE;
    let n0 = wg.x * TILE;
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<f32, 16>; // zero-initialised: [i * 4 + j]
    for (var k0 = 0u; k0 < k_len; k0 = k0 + DEPTH) {
        // a's tile, k fastest across invocations (a's rows are contiguous).
        for (var e = lid; e < TILE * DEPTH; e = e + 256u) {
            let k = e % DEPTH;
            let m = e / DEPTH;
            var v = 0.0;
            if (m0 + m < m_len && k0 + k < k_len) {
                if (trans == 1u) {
                    v = a[(m0 + m) * k_len + k0 + k];
                } else {
                    v = a_parts(m0 + m, k0 + k, k_len);
                }
            }
            a_tile[k * STRIDE + m] = v;
        }
        // B's tile, along W's rows across invocations.
        for (var e = lid; e < TILE * DEPTH; e = e + 256u) {
            var k = e / TILE;
            var n = e % TILE;
            if (trans == 1u) {
                k = e % DEPTH;
                n = e / DEPTH;
            }
            var v = 0.0;
            if (n0 + n < n_len && k0 + k < k_len) {
                if (trans == 1u) {
                    v = weight((n0 + n) * cols + k0 + k);
                } else {
                    v = weight((k0 + k) * cols + n0 + n);
                }
            }
            b_tile[k * STRIDE + n] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < DEPTH; k = k + 1u) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i = i + 1u) {
                av[i] = a_tile[k * STRIDE + ty + 16u * i];
                bv[i] = b_tile[k * STRIDE + tx + 16u * i];
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    acc[i * 4u + j] = acc[i * 4u + j] + av[i] * bv[j];
                }
            }
        }
        // No invocation may overwrite a tile before all have read it.
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let m = m0 + ty + 16u * i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let n = n0 + tx + 16u * j;
            if (m < m_len && n < n_len) {
                if (trans == 1u) {
                    c_parts(m, n, n_len, acc[i * 4u + j]);
                } else {
                    c[m * n_len + n] = acc[i * 4u + j];
                }
            }
        }
    }
}
