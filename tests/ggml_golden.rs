//! Our quantizers and dequantizers against llama.cpp's own, through the
//! golden files made by tests/golden/make_ggml_golden.py (ggml's
//! `quantize_row_*_ref` and `dequantize_row_*` run on fixed inputs).

mod common;

use common::*;
use subllm::kernels::{kernels_for, quant::TABLE};
use subllm::GgmlType;

fn golden(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/golden/ggml").join(name)
}

#[test]
fn quantized_bytes_equal_llama_cpp_for_every_type() {
    let input = read_f32_raw(&golden("input.f32"));
    let mut compared = 0;
    for k in TABLE {
        let path = golden(&format!("{}.q", k.ty.name()));
        if k.ty == GgmlType::F32 {
            continue; // ggml has no F32 "quantizer"; F32 is a copy
        }
        let expected = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut ours = vec![0u8; k.ty.row_bytes(input.len() as u64).unwrap() as usize];
        k.quantize(&input, &mut ours).unwrap();
        assert_eq!(ours.len(), expected.len(), "{}", k.ty);
        if let Some(i) = ours.iter().zip(&expected).position(|(a, b)| a != b) {
            let b = i / k.ty.block_bytes();
            panic!(
                "{}: byte {i} differs (block {b}, byte {} within it): ours {:02x}, llama.cpp {:02x}",
                k.ty,
                i % k.ty.block_bytes(),
                ours[i],
                expected[i]
            );
        }
        compared += 1;
    }
    assert_eq!(compared, TABLE.len() - 1);
}

#[test]
fn dequantized_values_equal_llama_cpp_for_every_type() {
    let mut compared = 0;
    for k in TABLE {
        let path = golden(&format!("{}.deq.f32", k.ty.name()));
        if !path.exists() {
            // ggml defines no dequantizer for F32 (identity) or Q8_1
            assert!(
                matches!(k.ty, GgmlType::F32 | GgmlType::Q8_1),
                "{} golden missing",
                k.ty
            );
            continue;
        }
        let q = std::fs::read(golden(&format!("{}.q", k.ty.name()))).unwrap();
        let expected = read_f32_raw(&path);
        let mut ours = vec![0.0f32; expected.len()];
        kernels_for(k.ty)
            .unwrap()
            .dequantize(&q, &mut ours)
            .unwrap();
        assert_bits_equal(k.ty.name(), &ours, &expected);
        compared += 1;
    }
    assert_eq!(compared, TABLE.len() - 2);
}
