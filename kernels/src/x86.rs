//! x86-64 SIMD dot products of weight rows with quantized activation rows.
//!
//! Each kernel computes exactly what its scalar twin in `quant/` computes,
//! bit for bit:
//! - 32-element block types (Q4_0, Q4_1, Q8_0) keep ggml's x86 order
//!   ([`crate::quant`]'s `Lanes8`): eight f32 lanes, each fed per block with
//!   `fma(scale, exact sum of 4 consecutive products, lane)`, reduced as
//!   ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
//! - k-quants (Q4_K, Q6_K) sum each super-block's products as exact
//!   integers (any order gives the same integer), then combine them in one
//!   fixed f32 expression per super-block, accumulated in order.
//!
//! Two instantiations of each body: AVX2 (`vpmaddubsw` + `vpmaddwd` for the
//! four-product sums) and AVX-512 VNNI (`vpdpbusd`, one instruction). The
//! integer results are identical: the products of these types never
//! saturate `vpmaddubsw` (|u8 x i8| pairs stay below 2^15 for the level
//! ranges used here and for activations from our quantizers).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::cpu::Level;
use crate::quant::VecDotFn;
use crate::types::GgmlType;

/// f16 bits at `p` (unaligned) as f32, exactly.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = p.cast::<u16>().read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// ggml's `hsum_float_8`: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_f32_8(x: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// Sum of eight i32 lanes (exact while it fits, as here).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_i32_8(x: __m256i) -> i32 {
    let r = _mm_add_epi32(_mm256_extracti128_si256(x, 1), _mm256_castsi256_si128(x));
    let r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0b01_00_11_10));
    let r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0b10_11_00_01));
    _mm_cvtsi128_si32(r)
}

/// Lane k = a[4k]*b[4k] + ... + a[4k+3]*b[4k+3] (a unsigned, b signed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_avx2(a: __m256i, b: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
}

/// The same with one VNNI instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot4_vnni(a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
}

/// 32 nibbles of 16 bytes: low nibbles first (elements 0..16), then high.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles_32(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p.cast());
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(t, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(t, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// The 6-bit scales and minimums of a Q4_K/Q5_K super-block.
#[inline]
fn scales_mins_k4(q: &[u8; 12]) -> ([i32; 8], [i32; 8]) {
    let (mut sc, mut m) = ([0i32; 8], [0i32; 8]);
    for j in 0..8 {
        let (s, mm) = crate::quant::kquant_scale_min(j, q);
        sc[j] = s as i32;
        m[j] = mm as i32;
    }
    (sc, m)
}

macro_rules! dots {
    ($level:ident, $feat:literal, $dot4:ident) => {
        mod $level {
            use super::*;

            /// Q4_0 x Q8_0 over `nb` blocks.
            #[target_feature(enable = $feat)]
            pub unsafe fn q4_0(nb: usize, w: *const u8, x: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let off = _mm256_set1_epi8(8);
                for i in 0..nb {
                    let (wb, xb) = (w.add(i * 18), x.add(i * 34));
                    let d = f16_at(wb) * f16_at(xb);
                    let qx = _mm256_sub_epi8(nibbles_32(wb.add(2)), off);
                    let qy = _mm256_loadu_si256(xb.add(2).cast());
                    let s = $dot4(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
                }
                hsum_f32_8(acc)
            }

            /// Q8_0 x Q8_0 over `nb` blocks.
            #[target_feature(enable = $feat)]
            pub unsafe fn q8_0(nb: usize, w: *const u8, x: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for i in 0..nb {
                    let (wb, xb) = (w.add(i * 34), x.add(i * 34));
                    let d = f16_at(wb) * f16_at(xb);
                    let qx = _mm256_loadu_si256(wb.add(2).cast());
                    let qy = _mm256_loadu_si256(xb.add(2).cast());
                    let s = $dot4(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
                }
                hsum_f32_8(acc)
            }

            /// Q4_1 x Q8_1 over `nb` blocks.
            #[target_feature(enable = $feat)]
            pub unsafe fn q4_1(nb: usize, w: *const u8, x: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut summs = 0.0f32;
                for i in 0..nb {
                    let (wb, xb) = (w.add(i * 20), x.add(i * 36));
                    summs = f16_at(wb.add(2)).mul_add(f16_at(xb.add(2)), summs);
                    let d = f16_at(wb) * f16_at(xb);
                    let qx = nibbles_32(wb.add(4));
                    let qy = _mm256_loadu_si256(xb.add(4).cast());
                    let s = $dot4(qx, qy);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
                }
                hsum_f32_8(acc) + summs
            }

            /// Q4_K x Q8_K over `nb` super-blocks.
            #[target_feature(enable = $feat)]
            pub unsafe fn q4_k(nb: usize, w: *const u8, x: *const u8) -> f32 {
                let m4 = _mm256_set1_epi8(0x0f);
                let mut sum = 0.0f32;
                for i in 0..nb {
                    let (wb, xb) = (w.add(i * 144), x.add(i * 292));
                    let (d, dmin) = (f16_at(wb), f16_at(wb.add(2)));
                    let (sc, m) = scales_mins_k4(&*wb.add(4).cast::<[u8; 12]>());
                    let (qs, yq) = (wb.add(16), xb.add(4));
                    let mut acc = _mm256_setzero_si256();
                    for j in 0..4 {
                        let q4 = _mm256_loadu_si256(qs.add(32 * j).cast());
                        let lo = _mm256_and_si256(q4, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                        let plo = $dot4(lo, _mm256_loadu_si256(yq.add(64 * j).cast()));
                        let phi = $dot4(hi, _mm256_loadu_si256(yq.add(64 * j + 32).cast()));
                        acc = _mm256_add_epi32(
                            acc,
                            _mm256_add_epi32(
                                _mm256_mullo_epi32(plo, _mm256_set1_epi32(sc[2 * j])),
                                _mm256_mullo_epi32(phi, _mm256_set1_epi32(sc[2 * j + 1])),
                            ),
                        );
                    }
                    let sumi = hsum_i32_8(acc);
                    let bs = xb.add(260).cast::<i16>();
                    let mut summ = 0i32;
                    for j in 0..8 {
                        let b = bs.add(2 * j).read_unaligned() as i32
                            + bs.add(2 * j + 1).read_unaligned() as i32;
                        summ += m[j] * b;
                    }
                    let yd = xb.cast::<f32>().read_unaligned();
                    sum += yd * (d * sumi as f32 - dmin * summ as f32);
                }
                sum
            }

            /// Q6_K x Q8_K over `nb` super-blocks.
            #[target_feature(enable = $feat)]
            pub unsafe fn q6_k(nb: usize, w: *const u8, x: *const u8) -> f32 {
                let m4 = _mm256_set1_epi8(0x0f);
                let m3 = _mm256_set1_epi8(3);
                let m32 = _mm256_set1_epi8(32);
                let mut sum = 0.0f32;
                for i in 0..nb {
                    let (wb, xb) = (w.add(i * 210), x.add(i * 292));
                    let (ql, qh, sc) = (wb, wb.add(128), wb.add(192).cast::<i8>());
                    let d = f16_at(wb.add(208));
                    let yq = xb.add(4);
                    let mut acc = _mm256_setzero_si256();
                    for h in 0..2 {
                        let hb = _mm256_loadu_si256(qh.add(32 * h).cast());
                        let l0 = _mm256_loadu_si256(ql.add(64 * h).cast());
                        let l1 = _mm256_loadu_si256(ql.add(64 * h + 32).cast());
                        let h0 = _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4);
                        let h2 =
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4);
                        let h4 =
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4);
                        let h6 =
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4);
                        let q = [
                            _mm256_or_si256(_mm256_and_si256(l0, m4), h0),
                            _mm256_or_si256(_mm256_and_si256(l1, m4), h2),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h4),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h6),
                        ];
                        for (k, &qk) in q.iter().enumerate() {
                            let y = _mm256_loadu_si256(yq.add(128 * h + 32 * k).cast());
                            let p = _mm256_sub_epi32($dot4(qk, y), $dot4(m32, y));
                            let s0 = *sc.add(8 * h + 2 * k) as i32;
                            let s1 = *sc.add(8 * h + 2 * k + 1) as i32;
                            let scv = _mm256_set_epi32(s1, s1, s1, s1, s0, s0, s0, s0);
                            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(p, scv));
                        }
                    }
                    let sumi = hsum_i32_8(acc);
                    let yd = xb.cast::<f32>().read_unaligned();
                    sum += d * yd * sumi as f32;
                }
                sum
            }
        }
    };
}

dots!(avx2, "avx2,fma,f16c", dot4_avx2);
dots!(
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot4_vnni
);

/// Safe entry points: check the lengths, then call the kernel of a level
/// the CPU has (the caller picked it from [`crate::cpu`]).
macro_rules! entry {
    ($name:ident, $level:ident, $kernel:ident, $wb:expr, $xb:expr) => {
        fn $name(w: &[u8], x: &[u8]) -> f32 {
            let nb = w.len() / $wb;
            assert!(w.len() == nb * $wb && x.len() >= nb * $xb, "row sizes");
            // SAFETY: this function is only handed out by `vec_dot` below for
            // a level that `cpu::level()` detected on this CPU, so the target
            // features are present; the kernel reads exactly nb blocks of
            // each row, which the assert above proves are in bounds; all
            // loads are unaligned loads.
            unsafe { $level::$kernel(nb, w.as_ptr(), x.as_ptr()) }
        }
    };
}

entry!(q4_0_avx2, avx2, q4_0, 18, 34);
entry!(q4_1_avx2, avx2, q4_1, 20, 36);
entry!(q8_0_avx2, avx2, q8_0, 34, 34);
entry!(q4_k_avx2, avx2, q4_k, 144, 292);
entry!(q6_k_avx2, avx2, q6_k, 210, 292);
entry!(q4_0_avx512, avx512, q4_0, 18, 34);
entry!(q4_1_avx512, avx512, q4_1, 20, 36);
entry!(q8_0_avx512, avx512, q8_0, 34, 34);
entry!(q4_k_avx512, avx512, q4_k, 144, 292);
entry!(q6_k_avx512, avx512, q6_k, 210, 292);

/// The SIMD dot product of weight type `ty` at `level`, if there is one.
/// The caller guarantees the CPU supports `level`.
pub(crate) fn vec_dot(ty: GgmlType, level: Level) -> Option<VecDotFn> {
    let f: VecDotFn = match (level, ty) {
        (Level::Avx2, GgmlType::Q4_0) => q4_0_avx2,
        (Level::Avx2, GgmlType::Q4_1) => q4_1_avx2,
        (Level::Avx2, GgmlType::Q8_0) => q8_0_avx2,
        (Level::Avx2, GgmlType::Q4K) => q4_k_avx2,
        (Level::Avx2, GgmlType::Q6K) => q6_k_avx2,
        (Level::Avx512, GgmlType::Q4_0) => q4_0_avx512,
        (Level::Avx512, GgmlType::Q4_1) => q4_1_avx512,
        (Level::Avx512, GgmlType::Q8_0) => q8_0_avx512,
        (Level::Avx512, GgmlType::Q4K) => q4_k_avx512,
        (Level::Avx512, GgmlType::Q6K) => q6_k_avx512,
        _ => return None,
    };
    Some(f)
}

#[cfg(test)]
mod tests {
    use crate::cpu::{available, Level};
    use crate::kernels_for;
    use crate::types::GgmlType;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }
        fn f(&mut self) -> f32 {
            let u = self.next() as f32 / (1u64 << 31) as f32 - 1.0;
            // mostly small values, a few outliers per block
            if self.next() % 23 == 0 {
                u * 40.0
            } else {
                u
            }
        }
    }

    const TYPES: [GgmlType; 5] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ];

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// Every SIMD dot equals its scalar twin bit for bit, for every length
    /// from 1 to 9 blocks, on quantized data and on arbitrary weight bytes.
    #[test]
    fn simd_dots_equal_their_scalar_twins_bitwise() {
        let levels: Vec<Level> = available()
            .into_iter()
            .filter(|&l| l != Level::Scalar)
            .collect();
        if levels.is_empty() {
            eprintln!("no SIMD level on this CPU: nothing to compare");
            return;
        }
        let mut rng = Lcg(7);
        let mut checked = 0;
        for ty in TYPES {
            let k = kernels_for(ty).unwrap();
            let act = kernels_for(k.vec_dot_type).unwrap();
            let scalar = k.vec_dot_at(Level::Scalar);
            for nb in 1..=9usize {
                let n = nb * ty.block_len();
                for trial in 0..20 {
                    let w: Vec<f32> = (0..n).map(|_| rng.f()).collect();
                    let x: Vec<f32> = (0..n).map(|_| rng.f()).collect();
                    let mut wq = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
                    let mut xq = vec![0u8; act.ty.row_bytes(n as u64).unwrap() as usize];
                    if trial % 4 == 3 {
                        // arbitrary bytes: hostile scales (inf, NaN) and levels
                        for b in wq.iter_mut() {
                            *b = rng.next() as u8;
                        }
                    } else {
                        k.quantize(&w, &mut wq).unwrap();
                    }
                    act.quantize_act(&x, &mut xq).unwrap();
                    let want = scalar(&wq, &xq);
                    for &l in &levels {
                        let got = k.vec_dot_at(l)(&wq, &xq);
                        assert!(
                            same(got, want),
                            "{ty} {l:?} nb={nb} trial={trial}: {got} vs scalar {want}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 0);
    }

    /// Unaligned rows (a GGUF may align tensors to 1 byte) give the same.
    #[test]
    fn simd_dots_read_unaligned_rows() {
        let mut rng = Lcg(11);
        for ty in TYPES {
            let k = kernels_for(ty).unwrap();
            let act = kernels_for(k.vec_dot_type).unwrap();
            let n = 3 * ty.block_len();
            let w: Vec<f32> = (0..n).map(|_| rng.f()).collect();
            let x: Vec<f32> = (0..n).map(|_| rng.f()).collect();
            let wb = ty.row_bytes(n as u64).unwrap() as usize;
            let xb = act.ty.row_bytes(n as u64).unwrap() as usize;
            let (mut wq, mut xq) = (vec![0u8; wb + 1], vec![0u8; xb + 3]);
            k.quantize(&w, &mut wq[1..]).unwrap();
            act.quantize_act(&x, &mut xq[3..]).unwrap();
            let want = k.vec_dot_at(Level::Scalar)(&wq[1..], &xq[3..]);
            for l in available() {
                assert!(
                    same(k.vec_dot_at(l)(&wq[1..], &xq[3..]), want),
                    "{ty} {l:?}"
                );
            }
        }
    }
}
