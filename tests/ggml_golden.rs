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

#[test]
fn dot_products_equal_llama_cpp_cpu_kernels_bit_for_bit() {
    // llama.cpp's x86 dots accumulate in a fixed lane order; for the
    // 32-element types ours follow it (kernels::quant::Lanes8), so results
    // are identical, not just close
    let input = read_f32_raw(&golden("input.f32"));
    let cols = 512;
    for name in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K",
    ] {
        let ty = GgmlType::from_name(name).unwrap();
        let k = kernels_for(ty).unwrap();
        let act = kernels_for(k.vec_dot_type).unwrap();
        let w = std::fs::read(golden(&format!("{name}.q"))).unwrap();
        let xq = std::fs::read(golden(&format!("{name}.act"))).unwrap();
        // our activation quantizer gives llama.cpp's CPU bytes for this row
        let row: Vec<f32> = input[5 * cols..6 * cols].iter().map(|v| v * 0.3).collect();
        let mut ours_xq = vec![0u8; xq.len()];
        act.quantize_act(&row, &mut ours_xq).unwrap();
        assert!(ours_xq == xq, "{name}: activation bytes differ");
        let want = read_f32_raw(&golden(&format!("{name}.dot.f32")));
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let kquant = ty.block_len() == 256;
        let top = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for level in subllm::kernels::cpu::available() {
            let got: Vec<f32> = (0..want.len())
                .map(|r| k.dot_at(level, &w[r * rb..(r + 1) * rb], &xq))
                .collect();
            if !kquant {
                assert_bits_equal(&format!("{name} dot at {level:?}"), &got, &want);
                continue;
            }
            // the k-quants sum in an order of our own (kernels::quant::kquant:
            // each super-block's exact integers, then one f32 expression per
            // super-block; every level and the packed layouts bit for bit),
            // not ggml's eight lanes, so they agree with llama.cpp within f32
            // rounding (largest seen: 1.8e-6 relative, Q6_K)
            for (r, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs() + 1e-7 * top,
                    "{name} row {r} at {level:?}: subllm {a} vs llama.cpp {b}"
                );
            }
        }
    }
}
