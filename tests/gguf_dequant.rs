//! GGUF reading and dequantization, checked against the `gguf` Python
//! package (`gguf.quants.dequantize`) on tests/fixtures/quant_types.gguf.

mod common;

use common::{Reference, read};
use tabtune::io::gguf::Gguf;

#[test]
fn every_supported_type_dequantizes_like_the_gguf_package() {
    let bytes = read("quant_types.gguf");
    let g = Gguf::parse("quant_types.gguf", &bytes).expect("parses");
    let expected = Reference::open("quant_types_expected.safetensors");
    let names = [
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K",
    ];
    for name in names {
        let info = g
            .tensor(name)
            .unwrap_or_else(|| panic!("{name} in fixture"));
        assert_eq!(info.torch_shape(), vec![2, 512], "{name} shape");
        let got = g.tensor_f32(info).expect("dequantizes");
        let (_, want) = expected.f32(name);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        // Same formulas, possibly different float association: allow 1 ulp-ish.
        common::assert_close(name, &got, &want, 1e-6 * scale.max(1.0));
    }
}

#[test]
fn a_truncated_file_is_an_error_not_a_panic() {
    let bytes = read("quant_types.gguf");
    let g = Gguf::parse("full", &bytes).expect("parses");
    // The writer pads after the last tensor: cut inside its data.
    let data_end = g
        .tensors
        .iter()
        .map(|t| t.start + t.len)
        .max()
        .expect("tensors");
    drop(g);
    for cut in [0, 3, 10, 24, 100, bytes.len() / 2, data_end - 1] {
        let err = Gguf::parse("cut.gguf", &bytes[..cut])
            .err()
            .expect("must fail");
        let msg = err.to_string();
        assert!(msg.starts_with("cut.gguf: "), "names the file: {msg}");
        assert!(
            msg.contains("truncated") || msg.contains("magic"),
            "says why: {msg}"
        );
    }
}

#[test]
fn a_file_that_lies_about_its_sizes_is_rejected_without_allocating() {
    // Header claiming 2^60 tensors.
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((1u64 << 60).to_le_bytes());
    b.extend(0u64.to_le_bytes());
    let msg = Gguf::parse("lie.gguf", &b)
        .err()
        .expect("fails")
        .to_string();
    assert!(msg.contains("tensor count"), "{msg}");

    // A string key whose length is larger than the file.
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    b.extend([0u8; 64]);
    let msg = Gguf::parse("lie.gguf", &b)
        .err()
        .expect("fails")
        .to_string();
    assert!(msg.contains("metadata key length"), "{msg}");
}

#[test]
fn an_unsupported_tensor_type_is_named_in_the_error() {
    let mut bytes = read("quant_types.gguf");
    let g = Gguf::parse("x", &bytes).expect("parses");
    // Find the type field of the first tensor info ("F32") and set it to IQ2_XXS (16).
    let name_pos = bytes
        .windows(3)
        .position(|w| w == b"F32")
        .expect("F32 name");
    drop(g);
    let type_pos = name_pos + 3 + 4 + 2 * 8; // name, n_dims, 2 dims
    bytes[type_pos..type_pos + 4].copy_from_slice(&16u32.to_le_bytes());
    let msg = Gguf::parse("iq2.gguf", &bytes)
        .err()
        .expect("fails")
        .to_string();
    assert!(
        msg.contains("ggml type 16") && msg.contains("supported"),
        "{msg}"
    );
}

#[test]
fn a_non_gguf_file_is_rejected() {
    let msg = Gguf::parse("model.bin", b"PK\x03\x04 not a gguf")
        .err()
        .expect("fails")
        .to_string();
    assert!(msg.contains("not a GGUF file"), "{msg}");
}
