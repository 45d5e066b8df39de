//! Self-consistency tests of the scalar block formats. Bit-exactness against
//! ggml and the `gguf` package is checked by the workspace's integration tests.

use super::*;

/// A small deterministic generator (xorshift64*) for test data.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform() * 3.0).collect()
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let k = kernels_for(ty).unwrap();
    let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    k.quantize(x, &mut q).unwrap();
    let mut y = vec![0.0; x.len()];
    k.dequantize(&q, &mut y).unwrap();
    y
}

/// Root-mean-square error relative to the RMS of the input.
fn rel_rmse(x: &[f32], y: &[f32]) -> f32 {
    let e: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
    let s: f32 = x.iter().map(|a| a * a).sum();
    (e / s).sqrt()
}

#[test]
fn every_table_row_matches_its_block_size() {
    for k in TABLE {
        let elems = k.ty.block_len() * 3;
        let mut out = vec![0u8; k.ty.block_bytes() * 3];
        k.quantize(&vec![0.25; elems], &mut out).unwrap();
        assert!(k.quantize(&vec![0.25; elems], &mut out[1..]).is_err());
        if k.ty.block_len() > 1 {
            assert!(k.quantize(&vec![0.25; elems - 1], &mut out).is_err());
        }
    }
}

#[test]
fn round_trip_error_is_within_each_types_resolution() {
    // (type, bound on relative RMS error for uniform data): about half a
    // quantization step relative to the data's spread, with margin.
    let cases = [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 1e-3),
        (GgmlType::BF16, 4e-3),
        (GgmlType::Q8_0, 0.01),
        (GgmlType::Q8_1, 0.01),
        (GgmlType::Q8K, 0.01),
        (GgmlType::Q6K, 0.03),
        (GgmlType::Q5_0, 0.06),
        (GgmlType::Q5_1, 0.06),
        (GgmlType::Q5K, 0.06),
        (GgmlType::Q4_0, 0.12),
        (GgmlType::Q4_1, 0.12),
        (GgmlType::Q4K, 0.12),
    ];
    let x = random(4096, 7);
    for (ty, bound) in cases {
        let y = round_trip(ty, &x);
        let e = rel_rmse(&x, &y);
        assert!(e <= bound, "{ty}: relative rmse {e} > {bound}");
    }
}

#[test]
fn zeros_stay_zero_and_constants_are_exact_where_representable() {
    for k in TABLE {
        let n = 512;
        let y = round_trip(k.ty, &vec![0.0; n]);
        assert!(y.iter().all(|&v| v == 0.0), "{}", k.ty);
    }
    // a constant block is exact where its scale is a power of two (Q4_0: 2/8,
    // Q5_0: 2/16) or zero (Q4_1, Q5_1 store the constant as the minimum)
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
    ] {
        let y = round_trip(ty, &vec![-2.0; 64]);
        assert!(y.iter().all(|&v| v == -2.0), "{ty}: {y:?}");
    }
}

#[test]
fn misaligned_input_dequantizes_like_aligned_input() {
    let x = random(512, 3);
    for k in TABLE {
        let nb = k.ty.row_bytes(512).unwrap() as usize;
        let mut q = vec![0u8; nb + 1];
        k.quantize(&x, &mut q[1..]).unwrap();
        let mut a = vec![0.0; 512];
        k.dequantize(&q[1..], &mut a).unwrap();
        let aligned = q[1..].to_vec();
        let mut b = vec![0.0; 512];
        k.dequantize(&aligned, &mut b).unwrap();
        assert_eq!(a, b, "{}", k.ty);
    }
}

#[test]
fn view_blocks_checks_length_and_alignment() {
    let buf = [0.0f32; 80];
    let bytes = blocks_as_bytes(&buf);
    assert_eq!(
        view_blocks::<BlockQ8K>(&bytes[..292]).map(|b| b.len()),
        Some(1)
    );
    assert!(view_blocks::<BlockQ8K>(&bytes[..291]).is_none());
    assert!(view_blocks::<BlockQ8K>(&bytes[2..294]).is_none());
    assert_eq!(
        view_blocks::<BlockQ4_0>(&bytes[2..38]).map(|b| b.len()),
        Some(2)
    );
}

#[test]
fn unsupported_types_say_so() {
    assert_eq!(
        kernels_for(GgmlType::IQ2XXS).err(),
        Some(QuantError::Unsupported(GgmlType::IQ2XXS))
    );
}

#[test]
fn vec_dot_equals_the_dot_of_dequantized_operands() {
    let n = 1024;
    let w = random(n, 11);
    let x = random(n, 12);
    let mut checked = 0;
    for k in TABLE.iter().filter(|k| k.has_vec_dot()) {
        let act = kernels_for(k.vec_dot_type).unwrap();
        let mut wq = vec![0u8; k.ty.row_bytes(n as u64).unwrap() as usize];
        k.quantize(&w, &mut wq).unwrap();
        let mut xq = vec![0u8; act.ty.row_bytes(n as u64).unwrap() as usize];
        act.quantize(&x, &mut xq).unwrap();
        let (mut wd, mut xd) = (vec![0.0; n], vec![0.0; n]);
        k.dequantize(&wq, &mut wd).unwrap();
        act.dequantize(&xq, &mut xd).unwrap();
        let exact: f64 = wd.iter().zip(&xd).map(|(a, b)| *a as f64 * *b as f64).sum();
        let scale: f64 = wd
            .iter()
            .zip(&xd)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        let got = k.vec_dot(n, &wq, &xq) as f64;
        // Q8_1 carries d*sum(q) rounded to f16 (relative error up to 2^-11),
        // which the Q4_1/Q5_1 dots multiply by the weight minimum, as ggml does
        let tol = if k.vec_dot_type == GgmlType::Q8_1 {
            2e-4
        } else {
            1e-5
        };
        assert!(
            (got - exact).abs() <= tol * scale,
            "{}: {got} vs {exact}",
            k.ty
        );
        // and unaligned operands give the same result
        let mut wu = vec![0u8; wq.len() + 1];
        wu[1..].copy_from_slice(&wq);
        assert_eq!(
            k.vec_dot(n, &wu[1..], &xq).to_bits(),
            (got as f32).to_bits()
        );
        checked += 1;
    }
    assert_eq!(checked, 11);
}

/// The Q8_0/Q8_1 activation quantizer (lane-wise maxima, compiled for AVX2
/// where the CPU has it) equals the plain sequential definition byte for
/// byte, on blocks with zeros, NaN, infinities, ties and the largest value
/// in every position.
#[test]
fn activation_quantizer_equals_its_sequential_definition() {
    fn naive(x: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for xb in x.chunks_exact(32) {
            let amax = xb.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            out.extend(half::f16::from_f32(d).to_le_bytes());
            out.extend(xb.iter().map(|&v| (v * id).round_ties_even() as i8 as u8));
        }
        out
    }
    let mut x = random(32 * 64, 42);
    x[..32].fill(0.0);
    x[40] = f32::NAN;
    x[70] = f32::INFINITY;
    x[100] = -1e30;
    x[130] = 5.0;
    x[131] = -5.0;
    for b in 8..40 {
        x[b * 32 + (b % 32)] = 9.0 + b as f32;
    }
    let want = naive(&x);
    let mut got = vec![0u8; 34 * 64];
    quantize_with::<q8_0::Q8_0>(q8_0::Q8_0::quantize_act, &x, &mut got);
    assert_eq!(got, want, "scalar");
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::detected() >= crate::cpu::Level::Avx2 {
        got.fill(0);
        // SAFETY: the CPU has AVX2 (detected)
        unsafe { quantize_act_avx2::<q8_0::Q8_0>(&x, &mut got) };
        assert_eq!(got, want, "avx2");
    }
}

/// Importance weights do what they are for: where they are large, the
/// weighted quantizers' error is smaller than the reference quantizers'
/// (summed over rows, weighted by the importance). Types whose ggml
/// quantizer ignores weights give the reference bytes.
#[test]
fn importance_weighted_quantizers_favour_the_important_values() {
    let n = 512;
    for k in TABLE.iter().filter(|k| k.has_vec_dot()) {
        let ty = k.ty;
        let rb = ty.row_bytes(n as u64).unwrap() as usize;
        let (mut err_ref, mut err_w) = (0.0f64, 0.0f64);
        for seed in 0..8 {
            let x = random(n, 100 + seed);
            // a few important columns, the rest nearly irrelevant
            let qw: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 7 == seed as usize % 7 {
                        50.0
                    } else {
                        0.05
                    }
                })
                .collect();
            let (mut q_ref, mut q_w) = (vec![0u8; rb], vec![0u8; rb]);
            k.quantize(&x, &mut q_ref).unwrap();
            k.quantize_row_weighted(&x, &qw, &mut q_w).unwrap();
            if !k.weighted {
                assert_eq!(q_ref, q_w, "{ty:?}");
                continue;
            }
            let (mut y_ref, mut y_w) = (vec![0.0; n], vec![0.0; n]);
            k.dequantize(&q_ref, &mut y_ref).unwrap();
            k.dequantize(&q_w, &mut y_w).unwrap();
            for i in 0..n {
                err_ref += (qw[i] * (x[i] - y_ref[i]).powi(2)) as f64;
                err_w += (qw[i] * (x[i] - y_w[i]).powi(2)) as f64;
            }
        }
        if k.weighted {
            assert!(
                err_w < err_ref,
                "{ty:?}: weighted {err_w} vs reference {err_ref}"
            );
        }
    }
    // the weights must match the row
    let k = kernels_for(GgmlType::Q4_0).unwrap();
    let mut q = vec![0u8; 18];
    assert!(k
        .quantize_row_weighted(&[0.0; 32], &[1.0; 31], &mut q)
        .is_err());
}
