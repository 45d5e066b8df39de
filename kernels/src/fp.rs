//! Scalar numeric helpers shared by the quantizers: half-precision
//! conversions and ggml's rounding rules, reproduced exactly so that our
//! quantized bytes equal ggml's.

use half::{bf16, f16};

/// f32 -> f16, round to nearest even (the IEEE conversion ggml uses).
#[inline]
pub fn f32_to_f16(x: f32) -> f16 {
    f16::from_f32(x)
}

/// f16 -> f32 (exact).
#[inline]
pub fn f16_to_f32(x: f16) -> f32 {
    x.to_f32()
}

/// f32 -> bf16 the way ggml rounds: NaNs become quiet NaNs keeping their
/// sign and top payload bits, everything else rounds to nearest even.
#[inline]
pub fn f32_to_bf16(x: f32) -> bf16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return bf16::from_bits(((u >> 16) | 64) as u16);
    }
    let rounded = (u as u64 + 0x7fff + ((u as u64 >> 16) & 1)) >> 16;
    bf16::from_bits(rounded as u16)
}

/// bf16 -> f32 (exact).
#[inline]
pub fn bf16_to_f32(x: bf16) -> f32 {
    f32::from_bits((x.to_bits() as u32) << 16)
}

/// Round to the nearest integer, ties to even, valid for |x| <= 4194303.
///
/// This is ggml's `nearest_int`: adding 1.5 * 2^23 moves the integer part
/// into the low mantissa bits, and the float adder does the rounding.
/// Outside that range the result is meaningless (as in ggml); callers clamp.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0f32;
    ((v.to_bits() & 0x007f_ffff) as i32) - 0x0040_0000
}

/// C's `(int8_t)f` for the values the quantizers produce: truncation
/// toward zero (saturating outside the int8 range instead of C's UB).
#[inline]
pub fn trunc_i8(x: f32) -> i8 {
    x as i8
}

/// C's `roundf`: halves round away from zero.
#[inline]
pub fn round_away(x: f32) -> f32 {
    x.round()
}

/// e^x as ggml's vectorized `ggml_v_expf` computes it (a degree-5
/// polynomial after range reduction, every step fused as in its AVX-512
/// code; within 1.5 ulp of the true value). Used where results must equal
/// llama.cpp's bit for bit.
#[inline]
pub fn expf_ggml(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // log2(e)
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    ); // ln2 lo, hi
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let c = |bits: u32| f32::from_bits(bits);
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6).mul_add(b, 1.0));
    // scalef: j * 2^n, exact for integral n in range
    let n = n as i32;
    if (-126..=127).contains(&n) {
        j * f32::from_bits(((n + 127) as u32) << 23)
    } else {
        let h = n / 2;
        j * f32::from_bits(((h + 127) as u32) << 23) * f32::from_bits(((n - h + 127) as u32) << 23)
    }
}

/// `gate[i] = SiLU(gate[i]) * up[i]`, in place, as ggml's
/// `ggml_vec_swiglu_f32` on AVX-512: whole groups of 16 use `expf_ggml`,
/// the rest libm's `expf`.
pub fn swiglu_ggml(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::level() >= crate::cpu::Level::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (the level says so).
        return unsafe { swiglu_fma(gate, up) };
    }
    swiglu_body(gate, up)
}

/// The same code compiled with FMA instructions (`mul_add` then needs no
/// libm call) and AVX2 auto-vectorization: identical results, since no
/// float operation is reassociated.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn swiglu_fma(gate: &mut [f32], up: &[f32]) {
    swiglu_body(gate, up)
}

#[inline(always)]
fn swiglu_body(gate: &mut [f32], up: &[f32]) {
    // two loops, not one with a branch: vectorized, a branch becomes both
    // sides for every element, and libm's `expf` (an intrinsic, so
    // speculatable) then ran on all of them
    let n = gate.len().min(up.len());
    let n16 = n - n % 16;
    for (g, &u) in gate[..n16].iter_mut().zip(&up[..n16]) {
        *g = *g / (1.0 + expf_ggml(0.0 - *g)) * u;
    }
    for (g, &u) in gate[n16..n].iter_mut().zip(&up[n16..n]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `acc[i] = fma(x[i], v, acc[i])` (ggml's `vec_mad_f32`), FMA-compiled
/// where `level` has it (the same bits either way: one rounding each).
pub fn mad(acc: &mut [f32], x: &[f32], v: f32, level: crate::cpu::Level) {
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx2 && crate::cpu::detected() >= crate::cpu::Level::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (detected).
        return unsafe { mad_fma(acc, x, v) };
    }
    let _ = level;
    mad_body(acc, x, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mad_fma(acc: &mut [f32], x: &[f32], v: f32) {
    mad_body(acc, x, v)
}

#[inline(always)]
fn mad_body(acc: &mut [f32], x: &[f32], v: f32) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a = b.mul_add(v, *a);
    }
}

/// RoPE of one row of heads as ggml computes it: `cs` holds (cos, sin) of
/// each pair's angle; each adjacent pair of each `head_dim` head rotates
/// with fused products.
pub fn rope_row(row: &mut [f32], cs: &[(f32, f32)], head_dim: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::level() >= crate::cpu::Level::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (the level says so).
        return unsafe { rope_fma(row, cs, head_dim) };
    }
    rope_body(row, cs, head_dim)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rope_fma(row: &mut [f32], cs: &[(f32, f32)], head_dim: usize) {
    rope_body(row, cs, head_dim)
}

#[inline(always)]
fn rope_body(row: &mut [f32], cs: &[(f32, f32)], head_dim: usize) {
    for head in row.chunks_mut(head_dim) {
        for (i, &(c, s)) in cs.iter().enumerate() {
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a.mul_add(c, -(b * s));
            head[2 * i + 1] = a.mul_add(s, b * c);
        }
    }
}

/// f32 dot product with eight independent accumulators (vectorizes well).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// The wrapping sum of `x`, read as fast as this core can stream memory
/// (AVX-512 or AVX2 loads into independent accumulators where the CPU has
/// them): the memory bandwidth probe of `subllm-bench --membw`. With
/// `four_streams` false the slice is read front to back in one sequential
/// stream, as a decode task reads its weights; with it true, as four
/// quarters in lockstep, which keeps more prefetchers busy on some cores
/// and fewer on others (a probe tries both). The sum is the same either way.
pub fn stream_sum(x: &[u64], four_streams: bool) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::level() >= crate::cpu::Level::Avx2 {
        // SAFETY: the CPU has AVX2 (the level says so); AVX-512 is used
        // only where the level says so too.
        return unsafe {
            match (
                crate::cpu::level() >= crate::cpu::Level::Avx512,
                four_streams,
            ) {
                (true, false) => stream_sum_avx512::<1>(x),
                (true, true) => stream_sum_avx512::<4>(x),
                (false, false) => stream_sum_avx2::<1>(x),
                (false, true) => stream_sum_avx2::<4>(x),
            }
        };
    }
    if four_streams {
        stream_sum_body::<4>(x)
    } else {
        stream_sum_body::<1>(x)
    }
}

// The vector probes are written with intrinsics: left to itself, LLVM
// vectorizes the one-stream loop across iterations into gathers, which
// measure the gather unit, not memory. Per step each of the S streams
// reads 4 / S consecutive registers into accumulators of their own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
unsafe fn stream_sum_avx512<const S: usize>(x: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let (u, step) = (4 / S, 8 * (4 / S));
    let q = x.len() / S / step * step;
    let p = x.as_ptr();
    let mut acc = [_mm512_setzero_si512(); 4];
    for i in (0..q).step_by(step) {
        for s in 0..S {
            for r in 0..u {
                // SAFETY: s * q + i + 8 * r + 8 <= S * q <= x.len()
                let v = unsafe { _mm512_loadu_si512(p.add(s * q + i + 8 * r).cast()) };
                acc[s * u + r] = _mm512_add_epi64(acc[s * u + r], v);
            }
        }
    }
    let mut lanes = [0u64; 32];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: lanes holds 4 registers of 8 lanes
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().add(8 * k).cast(), *a) };
    }
    lanes
        .iter()
        .chain(&x[S * q..])
        .fold(0u64, |s, &v| s.wrapping_add(v))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stream_sum_avx2<const S: usize>(x: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let (u, step) = (4 / S, 4 * (4 / S));
    let q = x.len() / S / step * step;
    let p = x.as_ptr();
    let mut acc = [_mm256_setzero_si256(); 4];
    for i in (0..q).step_by(step) {
        for s in 0..S {
            for r in 0..u {
                // SAFETY: s * q + i + 4 * r + 4 <= S * q <= x.len()
                let v = unsafe { _mm256_loadu_si256(p.add(s * q + i + 4 * r).cast()) };
                acc[s * u + r] = _mm256_add_epi64(acc[s * u + r], v);
            }
        }
    }
    let mut lanes = [0u64; 16];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: lanes holds 4 registers of 4 lanes
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().add(4 * k).cast(), *a) };
    }
    lanes
        .iter()
        .chain(&x[S * q..])
        .fold(0u64, |s, &v| s.wrapping_add(v))
}

#[inline(always)]
fn stream_sum_body<const S: usize>(x: &[u64]) -> u64 {
    // the scalar twin: S streams (parts of x) read in lockstep, each into
    // 8 lanes, then the tail
    let q = x.len() / S / 8 * 8;
    let mut a = [[0u64; 8]; S];
    for i in (0..q).step_by(8) {
        for (s, acc) in a.iter_mut().enumerate() {
            for (l, &v) in acc.iter_mut().zip(&x[s * q + i..s * q + i + 8]) {
                *l = l.wrapping_add(v);
            }
        }
    }
    a.iter()
        .flatten()
        .chain(&x[S * q..])
        .fold(0u64, |s, &v| s.wrapping_add(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_at_every_level_is_its_scalar_twin() {
        let mut seed = 0x2545_f491u32;
        let mut r = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 24.0 - 12.0
        };
        for n in [0usize, 1, 15, 16, 17, 33, 100] {
            let g: Vec<f32> = (0..n).map(|_| r()).collect();
            let u: Vec<f32> = (0..n).map(|_| r()).collect();
            let mut want = g.clone();
            swiglu_body(&mut want, &u);
            for (i, (&w, (&g, &u))) in want.iter().zip(g.iter().zip(&u)).enumerate() {
                let silu = g as f64 / (1.0 + (-g as f64).exp());
                assert!(
                    (w as f64 - silu * u as f64).abs() <= 1e-5 * (1.0 + (silu * u as f64).abs()),
                    "{i}"
                );
            }
            let mut got = g.clone();
            swiglu_ggml(&mut got, &u);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "n={n}");
        }
    }

    #[test]
    fn stream_sum_is_the_wrapping_sum_in_both_layouts() {
        // lengths around the 8-lane and 4-stream boundaries, values that wrap
        for n in [0usize, 1, 7, 8, 31, 32, 33, 63, 64, 65, 1000, 4099] {
            let x: Vec<u64> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (u64::MAX - i))
                .collect();
            let want = x.iter().fold(0u64, |s, &v| s.wrapping_add(v));
            assert_eq!(stream_sum(&x, false), want, "one stream, n={n}");
            assert_eq!(stream_sum(&x, true), want, "four streams, n={n}");
            assert_eq!(stream_sum_body::<1>(&x), want, "scalar, n={n}");
            assert_eq!(stream_sum_body::<4>(&x), want, "scalar 4, n={n}");
        }
    }

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
    }

    #[test]
    fn expf_ggml_is_within_two_ulp_of_exp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (expf_ggml(x), (x as f64).exp());
            let ulp = (b as f32).abs() * f32::EPSILON;
            assert!(
                (a as f64 - b).abs() <= 2.0 * ulp as f64,
                "x = {x}: {a} vs {b}"
            );
            x += 0.0137;
        }
        assert_eq!(expf_ggml(-200.0), 0.0);
        assert_eq!(expf_ggml(200.0), f32::INFINITY);
    }

    #[test]
    fn bf16_rounding_matches_ggml() {
        // exact values pass through
        assert_eq!(f32_to_bf16(1.0).to_bits(), 0x3f80);
        // 1 + 2^-8 is a tie between 0x3f80 and 0x3f81: even wins
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)).to_bits(), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)).to_bits(), 0x3f82);
        // NaN stays NaN and becomes quiet
        let nan = f32::from_bits(0x7f80_0001);
        assert_eq!(f32_to_bf16(nan).to_bits(), 0x7fc0);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        // overflow rounds to infinity
        assert_eq!(f32_to_bf16(f32::MAX).to_bits(), 0x7f80);
    }
}
