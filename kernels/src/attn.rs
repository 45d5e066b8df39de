//! Attention kernels over cached rows, knowing nothing of models.

use half::f16;

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod heads;

/// One KV head's rows inside a cache: row j of this head is
/// `data[j * stride + offset..][..head_dim]`.
#[derive(Clone, Copy)]
pub struct HeadRows<'a, T> {
    pub data: &'a [T],
    pub stride: usize,
    pub offset: usize,
}

impl<'a, T> HeadRows<'a, T> {
    #[inline]
    fn row(&self, j: usize, len: usize) -> &'a [T] {
        &self.data[j * self.stride + self.offset..][..len]
    }

    /// Whether rows `0..n`, each `len` long, lie inside `data`.
    #[inline]
    fn holds(&self, n: usize, len: usize) -> bool {
        n == 0 || (n - 1) * self.stride + self.offset + len <= self.data.len()
    }
}

/// Attention of one query head over the first `n_keys` f16 keys and
/// values, computed as llama.cpp's CPU flash attention does for an F16
/// cache (so that results match it bit for bit, up to `expf`, see
/// [`softmax_exp`]): q rounded to f16, each
/// score an f16 dot product reduced in ggml's AVX-512 order, an online
/// softmax with the output accumulated in f16 (rounded after every key),
/// then scaled by 1/sum. Uses the AVX-512 or AVX2 kernel where the CPU
/// level has it; all give the same bits.
pub fn attend_f16(
    q: &[f32],
    k: HeadRows<'_, f16>,
    v: HeadRows<'_, f16>,
    n_keys: usize,
    scale: f32,
    acc: &mut [f32],
) {
    attend_f16_at(crate::cpu::level(), q, k, v, n_keys, scale, acc)
}

/// [`attend_f16`] at a given level (at most [`crate::cpu::detected`]).
pub fn attend_f16_at(
    level: crate::cpu::Level,
    q: &[f32],
    k: HeadRows<'_, f16>,
    v: HeadRows<'_, f16>,
    n_keys: usize,
    scale: f32,
    acc: &mut [f32],
) {
    let d = q.len();
    assert_eq!(acc.len(), d);
    assert!(
        k.holds(n_keys, d) && v.holds(n_keys, d),
        "rows out of bounds"
    );
    assert!(level <= crate::cpu::detected());
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx512 && d <= 256 {
        let mut job = [AttnJob {
            q,
            k,
            v,
            n_keys,
            out: acc,
        }];
        // SAFETY: the level is detected on this CPU (asserted above), the
        // head size is at most 256 (exactly 16 * V for the register
        // kernels), and the asserts prove every row the kernel reads is in
        // bounds.
        unsafe {
            match d {
                64 => x86::attend_f16_reg::<1, 4>(&mut job, scale),
                128 => x86::attend_f16_reg::<1, 8>(&mut job, scale),
                256 => x86::attend_f16_reg::<1, 16>(&mut job, scale),
                _ => x86::attend_f16_n::<1>(&mut job, scale),
            }
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx2 {
        if d <= 256 {
            let mut job = [AttnJob {
                q,
                k,
                v,
                n_keys,
                out: acc,
            }];
            // SAFETY: the CPU has AVX2, FMA and F16C (the level is detected,
            // asserted above), the head size is at most 256, and the asserts
            // prove every row the kernel reads is in bounds.
            unsafe { avx2::attend_f16_n::<1>(&mut job, scale) };
            return;
        }
        // SAFETY: the CPU has AVX2 and FMA (the level is detected, asserted
        // above); the code is the scalar twin's, compiled with FMA.
        return unsafe { attend_f16_scalar_fma(q, k, v, n_keys, scale, acc) };
    }
    attend_f16_scalar(q, k, v, n_keys, scale, acc)
}

/// [`attend_f16_scalar`] compiled with FMA, so that its `mul_add`s are
/// instructions instead of calls to libm's `fmaf` (the same results).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_f16_scalar_fma(
    q: &[f32],
    k: HeadRows<'_, f16>,
    v: HeadRows<'_, f16>,
    n_keys: usize,
    scale: f32,
    acc: &mut [f32],
) {
    attend_f16_scalar(q, k, v, n_keys, scale, acc)
}

/// One attention problem: a query head over the first `n_keys` rows of a
/// KV head, written to `out`.
pub struct AttnJob<'a> {
    pub q: &'a [f32],
    pub k: HeadRows<'a, f16>,
    pub v: HeadRows<'a, f16>,
    pub n_keys: usize,
    pub out: &'a mut [f32],
}

impl Default for AttnJob<'_> {
    /// An empty job (no query, no keys): a placeholder in a fixed array.
    fn default() -> Self {
        let none = HeadRows {
            data: &[],
            stride: 0,
            offset: 0,
        };
        AttnJob {
            q: &[],
            k: none,
            v: none,
            n_keys: 0,
            out: &mut [],
        }
    }
}

/// [`attend_f16`] for each job, with the same result per job bit for bit.
/// The AVX-512 kernel runs four (or two) jobs in lockstep, so their dependency
/// chains (f16 rounding after every key, then `exp`) overlap.
pub fn attend_f16_batch(jobs: &mut [AttnJob<'_>], scale: f32) {
    attend_f16_batch_at(crate::cpu::level(), jobs, scale)
}

/// [`attend_f16_batch`] at a given level (at most [`crate::cpu::detected`]).
pub fn attend_f16_batch_at(level: crate::cpu::Level, jobs: &mut [AttnJob<'_>], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx512 {
        let mut rest = &mut jobs[..];
        while rest.len() >= 2 {
            let d = rest[0].q.len();
            // lockstep width: every accumulator of the group in registers
            // (N * V <= 16) for the register kernels' head sizes
            let n = match d {
                128 => 2,
                256 => 1,
                _ if rest.len() >= 4 => 4,
                _ => 2,
            };
            let (four, tail) = rest.split_at_mut(n);
            let ok = d <= 256
                && four.iter().all(|j| {
                    j.q.len() == d
                        && j.out.len() == d
                        && j.k.holds(j.n_keys, d)
                        && j.v.holds(j.n_keys, d)
                });
            if ok {
                // SAFETY: the level is detected on this CPU, and the checks
                // above prove every row each job reads is in bounds.
                unsafe {
                    match (d, n) {
                        (64, 4) => x86::attend_f16_reg::<4, 4>(four, scale),
                        (64, _) => x86::attend_f16_reg::<2, 4>(four, scale),
                        (128, _) => x86::attend_f16_reg::<2, 8>(four, scale),
                        (256, _) => x86::attend_f16_reg::<1, 16>(four, scale),
                        (_, 4) => x86::attend_f16_n::<4>(four, scale),
                        _ => x86::attend_f16_n::<2>(four, scale),
                    }
                };
            } else {
                for j in four.iter_mut() {
                    attend_f16_at(level, j.q, j.k, j.v, j.n_keys, scale, j.out);
                }
            }
            rest = tail;
        }
        for j in rest.iter_mut() {
            attend_f16_at(level, j.q, j.k, j.v, j.n_keys, scale, j.out);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx2 {
        let mut rest = &mut jobs[..];
        while rest.len() >= 2 {
            let n = if rest.len() >= 4 { 4 } else { 2 };
            let (group, tail) = rest.split_at_mut(n);
            let d = group[0].q.len();
            let ok = d <= 256
                && group.iter().all(|j| {
                    j.q.len() == d
                        && j.out.len() == d
                        && j.k.holds(j.n_keys, d)
                        && j.v.holds(j.n_keys, d)
                });
            if ok {
                // SAFETY: the level is detected on this CPU (AVX2, FMA,
                // F16C), the jobs share a head size of at most 256, and the
                // checks above prove every row each job reads is in bounds.
                unsafe {
                    if n == 4 {
                        avx2::attend_f16_n::<4>(group, scale)
                    } else {
                        avx2::attend_f16_n::<2>(group, scale)
                    }
                };
            } else {
                for j in group.iter_mut() {
                    attend_f16_at(level, j.q, j.k, j.v, j.n_keys, scale, j.out);
                }
            }
            rest = tail;
        }
        for j in rest.iter_mut() {
            attend_f16_at(level, j.q, j.k, j.v, j.n_keys, scale, j.out);
        }
        return;
    }
    for j in jobs.iter_mut() {
        attend_f16_at(level, j.q, j.k, j.v, j.n_keys, scale, j.out);
    }
}

#[inline(always)]
fn attend_f16_scalar(
    q: &[f32],
    k: HeadRows<'_, f16>,
    v: HeadRows<'_, f16>,
    n_keys: usize,
    scale: f32,
    acc: &mut [f32],
) {
    let (_, sum) = attend_f16_state(q, k, v, 0..n_keys, scale, acc);
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for a in acc.iter_mut() {
        *a *= inv;
    }
}

/// [`attend_f16_scalar`] over the keys `keys` without the last step: the
/// output accumulator (f16 values) in `acc`, and the running max and sum.
#[inline(always)]
fn attend_f16_state(
    q: &[f32],
    k: HeadRows<'_, f16>,
    v: HeadRows<'_, f16>,
    keys: std::ops::Range<usize>,
    scale: f32,
    acc: &mut [f32],
) -> (f32, f32) {
    let d = q.len();
    let r16 = |x: f32| f16::from_f32(x).to_f32();
    // the rounded query and one key row: on the stack for heads up to 512
    let (mut q_buf, mut row_buf) = ([0.0f32; 512], [0.0f32; 512]);
    let (mut q_heap, mut row_heap) = (Vec::new(), Vec::new());
    let (q16, row) = if d <= 512 {
        (&mut q_buf[..d], &mut row_buf[..d])
    } else {
        q_heap.resize(d, 0.0);
        row_heap.resize(d, 0.0);
        (&mut q_heap[..], &mut row_heap[..])
    };
    for (o, &x) in q16.iter_mut().zip(q) {
        *o = r16(x);
    }
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    acc.fill(0.0);
    for j in keys {
        for (o, x) in row.iter_mut().zip(k.row(j, d)) {
            *o = x.to_f32();
        }
        let s = dot_f16_ggml(q16, row) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > m {
            let old = m;
            m = s;
            ms = softmax_exp(old - m);
            for a in acc.iter_mut() {
                *a = r16(*a * ms);
            }
        } else {
            vs = softmax_exp(s - m);
        }
        for (a, x) in acc.iter_mut().zip(v.row(j, d)) {
            *a = r16(x.to_f32().mul_add(vs, *a));
        }
        sum = sum.mul_add(ms, vs);
    }
    (m, sum)
}

/// Q8_0 bytes of one head row of `d` values (`d` a multiple of 32).
fn q8_row_bytes(d: usize) -> usize {
    d / 32 * 34
}

/// The largest head a Q8_0 attention job takes (its buffers live on the
/// stack).
pub const Q8_0_MAX_HEAD: usize = 512;

/// Attention of one query head over the first `n_keys` rows of a Q8_0
/// cache, read where they lie, computed as llama.cpp's CPU flash attention
/// does for a Q8_0 cache: q quantized to Q8_0, each score the Q8_0 x Q8_0
/// dot (ggml's order, see `quant`), an online softmax ([`softmax_exp`])
/// with the output accumulated in f32 from each dequantized value row
/// (`acc = acc * ms`, then `acc = fma(v, vs, acc)`), then scaled by 1/sum.
/// `k` and `v` rows hold `d / 32` blocks of 34 bytes (`stride` and
/// `offset` in bytes). Every level gives the same bits.
///
/// # Panics
/// If `d` is not a multiple of 32 or is above [`Q8_0_MAX_HEAD`], or a row
/// lies out of bounds.
#[allow(clippy::too_many_arguments)]
pub fn attend_q8_0_at(
    level: crate::cpu::Level,
    q: &[f32],
    k: HeadRows<'_, u8>,
    v: HeadRows<'_, u8>,
    n_keys: usize,
    scale: f32,
    acc: &mut [f32],
) {
    let d = q.len();
    assert!(d.is_multiple_of(32) && d <= Q8_0_MAX_HEAD && acc.len() == d);
    let rb = q8_row_bytes(d);
    assert!(
        k.holds(n_keys, rb) && v.holds(n_keys, rb),
        "rows out of bounds"
    );
    let q8 = crate::kernels_for(crate::GgmlType::Q8_0).expect("Q8_0 kernels");
    let mut qq = [0u8; Q8_0_MAX_HEAD / 32 * 34];
    let qq = &mut qq[..rb];
    q8.quantize_act(q, qq).expect("sizes match");
    let mut row = [0.0f32; Q8_0_MAX_HEAD];
    let row = &mut row[..d];
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    acc.fill(0.0);
    for j in 0..n_keys {
        let s = q8.dot_at(level, k.row(j, rb), qq) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > m {
            let old = m;
            m = s;
            ms = softmax_exp(old - m);
            acc.iter_mut().for_each(|a| *a *= ms);
        } else {
            vs = softmax_exp(s - m);
        }
        q8.dequantize(v.row(j, rb), row).expect("sizes match");
        crate::fp::mad(acc, row, vs, level);
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    acc.iter_mut().for_each(|a| *a *= inv);
}

/// Lower clamp of [`softmax_exp`]: e^-110 is below half the smallest f32
/// subnormal, so everything under it (and -inf) gives +0.
const EXP_LO: f64 = -110.0;
/// Upper clamp: e^89 overflows f32 to +inf (softmax arguments are <= 0).
const EXP_HI: f64 = 89.0;
const LN2_HI: f64 = 0.693_147_180_369_123_8;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// 1/n! for n = 0..=10, the Taylor series of e^r on |r| <= ln2/2.
const EXP_C: [f64; 11] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
];

/// e^x for the online softmax, evaluated in f64 and rounded once to f32:
/// x = k ln2 + r with k = round(x log2 e), e^r by its degree-10 Taylor
/// series (relative error about 2e-13), scaled by 2^k. So the result is the
/// correctly rounded e^x except within ~2e-13 of a rounding boundary
/// (none in the 2 M arguments tested). glibc's `expf`, which llama.cpp
/// calls here, is one ulp off on about 0.05% of them, so scores agree with
/// llama.cpp to the last bit nearly always. The SIMD kernels inline the same
/// operations 4 lanes at a time instead of calling out (a call spills every
/// vector register). NaN stays NaN; -inf gives 0.
#[inline(always)]
pub fn softmax_exp(x: f32) -> f32 {
    let x = x as f64;
    // the operand order keeps NaN, as `max_pd(lo, x)` / `min_pd(hi, x)` do
    let x = if EXP_LO > x { EXP_LO } else { x };
    let x = if EXP_HI < x { EXP_HI } else { x };
    let k = (x * std::f64::consts::LOG2_E).round_ties_even();
    let r = (-k).mul_add(LN2_HI, x);
    let r = (-k).mul_add(LN2_LO, r);
    let mut p = EXP_C[10];
    for &c in EXP_C[..10].iter().rev() {
        p = p.mul_add(r, c);
    }
    // k is within [-159, 129]: 2^k is a normal f64
    let scale = f64::from_bits(((k as i64 + 1023) as u64) << 52);
    (p * scale) as f32
}

/// ggml's f16 dot product on AVX-512: four 16-lane f32 accumulators fed
/// with fused multiply-adds 64 elements at a time, folded (0+2, 1+3, then
/// 0+1), reduced across lanes as GCC's `_mm512_reduce_add_ps` does, and the
/// remaining elements added in f64. Inputs hold f16 values, so each product
/// is exact in f32.
#[inline(always)]
fn dot_f16_ggml(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len();
    let np = n - n % 64;
    let mut acc = [[0.0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, al) in a.iter_mut().enumerate() {
                let k = i + 16 * j + l;
                *al = x[k].mul_add(y[k], *al);
            }
        }
    }
    let mut sum = 0.0f64;
    if np > 0 {
        let l: [f32; 16] =
            std::array::from_fn(|i| (acc[0][i] + acc[2][i]) + (acc[1][i] + acc[3][i]));
        let t3: [f32; 8] = std::array::from_fn(|i| l[8 + i] + l[i]);
        let t6: [f32; 4] = std::array::from_fn(|i| t3[4 + i] + t3[i]);
        sum = ((t6[0] + t6[2]) + (t6[1] + t6[3])) as f64;
    }
    for k in np..n {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

/// Query rows per tile of the prefill kernel: one SIMD lane each.
pub const TILE_ROWS: usize = 16;

/// Consecutive query rows of one head attending causally over f16 rows
/// (prefill): row i sees the first `n_keys0 + i` keys. Query row i is
/// `q[i * q_stride + q_offset..][..d]`, its output goes to
/// `out[i * out_stride + out_offset..][..d]`.
pub struct RowsJob<'a> {
    pub q: &'a [f32],
    pub q_stride: usize,
    pub q_offset: usize,
    pub rows: usize,
    pub n_keys0: usize,
    pub k: HeadRows<'a, f16>,
    pub v: HeadRows<'a, f16>,
    pub out: &'a mut [f32],
    pub out_stride: usize,
    pub out_offset: usize,
    pub d: usize,
}

/// Tiled causal attention for many query rows (the prefill form, as
/// llama.cpp's tiled CPU flash attention for batches): tiles of
/// [`TILE_ROWS`] queries, one per SIMD lane, walk the keys in blocks of 16.
/// Per block: scores by f32 fused multiply-adds over the head (f32 q and k),
/// times `scale`, future keys masked; the running max, `exp` by
/// [`tile_exp`], the running sum and output rescaled only where the max
/// grew; then the output accumulated in f32 (no f16 rounding). Blocks start
/// at key 0 whatever the tiling, and fully masked keys add exact zeros, so a
/// row's result does not depend on which rows share its tile. The scalar
/// level does the same operations lane by lane (bitwise equal).
pub fn attend_f16_rows(job: RowsJob<'_>, scale: f32) {
    attend_f16_rows_at(crate::cpu::level(), job, scale)
}

/// [`attend_f16_rows`] at a given level (at most [`crate::cpu::detected`]).
pub fn attend_f16_rows_at(level: crate::cpu::Level, job: RowsJob<'_>, scale: f32) {
    let d = job.d;
    assert!(level <= crate::cpu::detected());
    assert!((1..=256).contains(&d), "head size {d}");
    if job.rows == 0 {
        return;
    }
    assert!(job.n_keys0 >= 1, "row 0 sees no key");
    let n_max = job.n_keys0 + job.rows - 1;
    assert!(n_max < i32::MAX as usize, "{n_max} keys");
    assert!(
        job.k.holds(n_max, d) && job.v.holds(n_max, d),
        "rows out of bounds"
    );
    assert!((job.rows - 1) * job.q_stride + job.q_offset + d <= job.q.len());
    assert!((job.rows - 1) * job.out_stride + job.out_offset + d <= job.out.len());
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx512 && d.is_multiple_of(16) {
        // SAFETY: the level is detected on this CPU, the head size is a
        // multiple of 16 of at most 256, and the asserts above prove every
        // query, key, value and output row the kernel touches is in bounds.
        unsafe { x86::attend_rows(job, scale) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx2 && d.is_multiple_of(8) {
        // SAFETY: the CPU has AVX2, FMA and F16C (the level is detected),
        // the head size is a multiple of 8 of at most 256, and the asserts
        // above prove every row the kernel touches is in bounds.
        unsafe { avx2::attend_rows(job, scale) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (the level is detected, asserted
        // above); the code is the scalar twin's, compiled with FMA.
        return unsafe { rows_scalar_fma(job, scale) };
    }
    rows_scalar(job, scale)
}

/// [`rows_scalar`] compiled with FMA (instructions instead of `fmaf`
/// calls; the same results).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_scalar_fma(job: RowsJob<'_>, scale: f32) {
    rows_scalar(job, scale)
}

const TEXP_LO: f32 = -88.0;
const TEXP_HI: f32 = 88.0;
const TLN2_HI: f32 = 0.693_359_4;
const TLN2_LO: f32 = -2.121_944_4e-4;
/// 1/n! for n = 0..=7.
const TEXP_C: [f32; 8] = [
    1.0,
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];

/// e^x in f32 for the tiled kernel (the 16-lane version does the same
/// operations): 2^k times a degree-7 Taylor series on |r| <= ln2/2, within
/// a few ulp; arguments at or below -88 (and -inf) give exactly 0, 0 gives
/// exactly 1, NaN stays NaN.
#[inline(always)]
pub fn tile_exp(x: f32) -> f32 {
    let x = if TEXP_LO > x { TEXP_LO } else { x };
    let x = if TEXP_HI < x { TEXP_HI } else { x };
    let k = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-k).mul_add(TLN2_HI, x);
    let r = (-k).mul_add(TLN2_LO, r);
    let mut p = TEXP_C[7];
    for &c in TEXP_C[..7].iter().rev() {
        p = p.mul_add(r, c);
    }
    // k in [-127, 127]: k = -127 makes the scale (and the result) 0
    let ki = if k.is_nan() { 0 } else { k as i32 };
    p * f32::from_bits(((ki + 127) as u32) << 23)
}

/// The tiled kernel, one lane at a time (the reference and the fallback).
#[inline(always)]
fn rows_scalar(job: RowsJob<'_>, scale: f32) {
    let d = job.d;
    let mut acc = vec![0.0f32; TILE_ROWS * d];
    for t0 in (0..job.rows).step_by(TILE_ROWS) {
        let rows = (job.rows - t0).min(TILE_ROWS);
        let nk0 = job.n_keys0 + t0;
        let n_max = nk0 + rows - 1;
        let q = |i: usize| &job.q[(t0 + i) * job.q_stride + job.q_offset..][..d];
        let (mut m, mut sum) = ([f32::NEG_INFINITY; TILE_ROWS], [0.0f32; TILE_ROWS]);
        acc.fill(0.0);
        for b in (0..n_max).step_by(16) {
            let kb = (n_max - b).min(16);
            let mut s = [[0.0f32; TILE_ROWS]; 16];
            for (t, st) in s.iter_mut().enumerate().take(kb) {
                let kr = job.k.row(b + t, d);
                for (i, si) in st.iter_mut().enumerate() {
                    // padding lanes (i >= rows) compute on zero queries
                    let mut a = 0.0f32;
                    if i < rows {
                        for (x, y) in q(i).iter().zip(kr) {
                            a = x.mul_add(y.to_f32(), a);
                        }
                    }
                    a *= scale;
                    *si = if b + t < nk0 + i {
                        a
                    } else {
                        f32::NEG_INFINITY
                    };
                }
            }
            for i in 0..TILE_ROWS {
                let mut mb = m[i];
                for st in s.iter().take(kb) {
                    mb = if st[i] > mb { st[i] } else { mb };
                }
                let ms = tile_exp(m[i] - mb);
                m[i] = mb;
                sum[i] *= ms;
                let mut p = [0.0f32; 16];
                for t in 0..kb {
                    p[t] = tile_exp(s[t][i] - mb);
                    sum[i] += p[t];
                }
                if i >= rows {
                    continue;
                }
                let a = &mut acc[i * d..(i + 1) * d];
                if ms != 1.0 {
                    for x in a.iter_mut() {
                        *x *= ms;
                    }
                }
                for (t, &pt) in p.iter().enumerate().take(kb) {
                    for (x, y) in a.iter_mut().zip(job.v.row(b + t, d)) {
                        *x = pt.mul_add(y.to_f32(), *x);
                    }
                }
            }
        }
        for i in 0..rows {
            let inv = if sum[i] == 0.0 { 0.0 } else { 1.0 / sum[i] };
            let o = &mut job.out[(t0 + i) * job.out_stride + job.out_offset..][..d];
            for (o, a) in o.iter_mut().zip(&acc[i * d..(i + 1) * d]) {
                *o = a * inv;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// f16 rounding of 16 lanes and back (round to nearest even).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    pub(super) unsafe fn r16(x: __m512) -> __m512 {
        _mm512_cvtph_ps(_mm512_cvtps_ph::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(x))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    pub(super) unsafe fn load16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }

    /// ggml's AVX-512 f16 dot reduction of four accumulators: folded
    /// (0+2, 1+3, then 0+1), then across lanes as GCC's
    /// `_mm512_reduce_add_ps` does (see `dot_f16_ggml`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    pub(super) unsafe fn reduce_ggml(a: [__m512; 4]) -> f32 {
        let l = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
        let t3 = _mm256_add_ps(_mm512_extractf32x8_ps::<1>(l), _mm512_castps512_ps256(l));
        let t6 = _mm_add_ps(_mm256_extractf128_ps::<1>(t3), _mm256_castps256_ps128(t3));
        let r = _mm_add_ps(t6, _mm_movehl_ps(t6, t6));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    }

    /// [`super::tile_exp`] of 16 lanes, the same operations per lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    pub(super) unsafe fn exp16(x: __m512) -> __m512 {
        use super::{TEXP_C, TEXP_HI, TEXP_LO, TLN2_HI, TLN2_LO};
        let x = _mm512_max_ps(_mm512_set1_ps(TEXP_LO), x);
        let x = _mm512_min_ps(_mm512_set1_ps(TEXP_HI), x);
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(TLN2_HI), x);
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(TLN2_LO), r);
        let mut p = _mm512_set1_ps(TEXP_C[7]);
        for &c in TEXP_C[..7].iter().rev() {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let ki = _mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127));
        _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(ki)))
    }

    /// `rows_scalar` with the 16 query rows of a tile in the 16 lanes.
    ///
    /// # Safety
    /// As `attend_f16_rows_at` checks: head size a multiple of 16 of at
    /// most 256, every row in bounds, key counts below 2^31.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    pub unsafe fn attend_rows(job: super::RowsJob<'_>, scale: f32) {
        const T: usize = super::TILE_ROWS;
        let d = job.d;
        let nv = d / 16;
        // transposed queries [d][T], keys and values of a block as f32
        // [16][d], the output accumulators [T][d], the block's weights [16][T]
        let mut buf = vec![0.0f32; 4 * T * d + 16 * T];
        let (qt, rest) = buf.split_at_mut(T * d);
        let (kb_f, rest) = rest.split_at_mut(16 * d);
        let (vb_f, rest) = rest.split_at_mut(16 * d);
        let (acc, pb) = rest.split_at_mut(T * d);
        let (qt, kb_f, vb_f, acc, pb) = (
            qt.as_mut_ptr(),
            kb_f.as_mut_ptr(),
            vb_f.as_mut_ptr(),
            acc.as_mut_ptr(),
            pb.as_mut_ptr(),
        );
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let kp = job.k.data.as_ptr().add(job.k.offset);
        let vp = job.v.data.as_ptr().add(job.v.offset);
        for t0 in (0..job.rows).step_by(T) {
            let rows = (job.rows - t0).min(T);
            let nk0 = job.n_keys0 + t0;
            let n_max = nk0 + rows - 1;
            for dk in 0..d {
                for i in 0..T {
                    *qt.add(dk * T + i) = if i < rows {
                        *job.q
                            .as_ptr()
                            .add((t0 + i) * job.q_stride + job.q_offset + dk)
                    } else {
                        0.0
                    };
                }
            }
            std::ptr::write_bytes(acc, 0, T * d);
            let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut sum = _mm512_setzero_ps();
            let vis0 = _mm512_add_epi32(lane, _mm512_set1_epi32(nk0 as i32));
            for b in (0..n_max).step_by(16) {
                let kb = (n_max - b).min(16);
                for t in 0..kb {
                    let (kr, vr) = (
                        kp.add((b + t) * job.k.stride),
                        vp.add((b + t) * job.v.stride),
                    );
                    for e in 0..nv {
                        _mm512_storeu_ps(kb_f.add(t * d + 16 * e), load16(kr.add(16 * e)));
                        _mm512_storeu_ps(vb_f.add(t * d + 16 * e), load16(vr.add(16 * e)));
                    }
                }
                // scores: lane i of s[t] is row i against key b + t
                let mut s = [_mm512_setzero_ps(); 16];
                for dk in 0..d {
                    let qv = _mm512_loadu_ps(qt.add(dk * T));
                    for (t, st) in s.iter_mut().enumerate() {
                        *st = _mm512_fmadd_ps(qv, _mm512_set1_ps(*kb_f.add(t * d + dk)), *st);
                    }
                }
                let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
                let mut mb = m;
                for (t, st) in s.iter_mut().enumerate().take(kb) {
                    let x = _mm512_mul_ps(*st, _mm512_set1_ps(scale));
                    let vis = _mm512_cmpgt_epi32_mask(vis0, _mm512_set1_epi32((b + t) as i32));
                    *st = _mm512_mask_blend_ps(vis, ninf, x);
                    mb = _mm512_max_ps(*st, mb);
                }
                let ms = exp16(_mm512_sub_ps(m, mb));
                m = mb;
                sum = _mm512_mul_ps(sum, ms);
                for (t, st) in s.iter().enumerate().take(kb) {
                    let p = exp16(_mm512_sub_ps(*st, mb));
                    sum = _mm512_add_ps(sum, p);
                    _mm512_storeu_ps(pb.add(t * T), p);
                }
                let mut msa = [0.0f32; T];
                _mm512_storeu_ps(msa.as_mut_ptr(), ms);
                for (i, &msi) in msa.iter().enumerate().take(rows) {
                    let a = acc.add(i * d);
                    for e in 0..nv {
                        let mut r = _mm512_loadu_ps(a.add(16 * e));
                        if msi != 1.0 {
                            r = _mm512_mul_ps(r, _mm512_set1_ps(msi));
                        }
                        for t in 0..kb {
                            let p = _mm512_set1_ps(*pb.add(t * T + i));
                            r = _mm512_fmadd_ps(p, _mm512_loadu_ps(vb_f.add(t * d + 16 * e)), r);
                        }
                        _mm512_storeu_ps(a.add(16 * e), r);
                    }
                }
            }
            let mut sa = [0.0f32; T];
            _mm512_storeu_ps(sa.as_mut_ptr(), sum);
            for (i, &si) in sa.iter().enumerate().take(rows) {
                let inv = _mm512_set1_ps(if si == 0.0 { 0.0 } else { 1.0 / si });
                let o = job
                    .out
                    .as_mut_ptr()
                    .add((t0 + i) * job.out_stride + job.out_offset);
                for e in 0..nv {
                    _mm512_storeu_ps(
                        o.add(16 * e),
                        _mm512_mul_ps(_mm512_loadu_ps(acc.add(i * d + 16 * e)), inv),
                    );
                }
            }
        }
    }

    /// Keys ahead whose cache rows the decode kernel prefetches.
    const PREFETCH: usize = 24;

    /// [`attend_f16_n`] for a head size of exactly `16 * V` (V a multiple
    /// of 4): the same operations in the same order per job, but with each
    /// job's output accumulator held in `V` registers across all keys and
    /// the `exp` of all jobs computed inline together, so no key's chain
    /// goes through memory or a call. N * V at most 16 keeps every
    /// accumulator in a register.
    ///
    /// # Safety
    /// As `attend_f16`, for every job; every job's head size is `16 * V`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    pub unsafe fn attend_f16_reg<const N: usize, const V: usize>(
        jobs: &mut [super::AttnJob<'_>],
        scale: f32,
    ) {
        debug_assert!(jobs.len() == N && N <= 4 && V.is_multiple_of(4) && V <= 16);
        let r16s = |x: f32| f16::from_f32(x).to_f32();
        let mut q16 = [[0.0f32; 256]; N];
        let mut n_max = 0;
        for i in 0..N {
            debug_assert_eq!(jobs[i].q.len(), 16 * V);
            for (o, &x) in q16[i][..16 * V].iter_mut().zip(jobs[i].q) {
                *o = r16s(x);
            }
            n_max = n_max.max(jobs[i].n_keys);
        }
        let kp: [*const f16; N] =
            std::array::from_fn(|i| jobs[i].k.data.as_ptr().add(jobs[i].k.offset));
        let vp: [*const f16; N] =
            std::array::from_fn(|i| jobs[i].v.data.as_ptr().add(jobs[i].v.offset));
        let ks: [usize; N] = std::array::from_fn(|i| jobs[i].k.stride);
        let vs_: [usize; N] = std::array::from_fn(|i| jobs[i].v.stride);
        let nk: [usize; N] = std::array::from_fn(|i| jobs[i].n_keys);
        let mut acc = [[_mm512_setzero_ps(); V]; N];
        let mut m = [f32::NEG_INFINITY; N];
        let mut sum = [0.0f32; N];
        for j in 0..n_max {
            let mut x = [0.0f32; 4];
            let mut grew = [false; N];
            for i in 0..N {
                if j >= nk[i] {
                    continue;
                }
                // a head's slice of a cache row is a short run at a long
                // stride, which the hardware prefetchers follow poorly
                // (decode at depth reads the cache from memory): ask for
                // the rows PREFETCH keys ahead
                if j + PREFETCH < nk[i] {
                    let (kf, vf) = (
                        kp[i].add((j + PREFETCH) * ks[i]).cast::<i8>(),
                        vp[i].add((j + PREFETCH) * vs_[i]).cast::<i8>(),
                    );
                    for l in (0..32 * V).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>(kf.add(l));
                        _mm_prefetch::<_MM_HINT_T0>(vf.add(l));
                    }
                }
                let kr = kp[i].add(j * ks[i]);
                let qp = q16[i].as_ptr();
                let mut a = [_mm512_setzero_ps(); 4];
                for e in (0..V).step_by(4) {
                    for (t, at) in a.iter_mut().enumerate() {
                        let o = 16 * (e + t);
                        *at = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(o)), load16(kr.add(o)), *at);
                    }
                }
                let s = reduce_ggml(a) * scale;
                if s > m[i] {
                    x[i] = m[i] - s;
                    m[i] = s;
                    grew[i] = true;
                } else {
                    x[i] = s - m[i];
                }
            }
            let e = super::avx2::exp4(x);
            for i in 0..N {
                if j >= nk[i] {
                    continue;
                }
                let (ms, vs) = if grew[i] {
                    (e[i], 1.0f32)
                } else {
                    (1.0f32, e[i])
                };
                if grew[i] {
                    let msv = _mm512_set1_ps(ms);
                    for a in acc[i].iter_mut() {
                        *a = r16(_mm512_mul_ps(*a, msv));
                    }
                }
                let vr = vp[i].add(j * vs_[i]);
                let vsv = _mm512_set1_ps(vs);
                for (t, a) in acc[i].iter_mut().enumerate() {
                    *a = r16(_mm512_fmadd_ps(load16(vr.add(16 * t)), vsv, *a));
                }
                sum[i] = sum[i].mul_add(ms, vs);
            }
        }
        for i in 0..N {
            let inv = _mm512_set1_ps(if sum[i] == 0.0 { 0.0 } else { 1.0 / sum[i] });
            let out = jobs[i].out.as_mut_ptr();
            for (t, a) in acc[i].iter().enumerate() {
                _mm512_storeu_ps(out.add(16 * t), _mm512_mul_ps(*a, inv));
            }
        }
    }

    /// `N` jobs of `attend_f16_scalar` in lockstep, each with the same
    /// operations in the same order, 16 lanes at a time (N = 1: one job).
    ///
    /// # Safety
    /// As `attend_f16`, for every job; all share one head size of at most
    /// 256.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    pub unsafe fn attend_f16_n<const N: usize>(jobs: &mut [super::AttnJob<'_>], scale: f32) {
        debug_assert_eq!(jobs.len(), N);
        let d = jobs[0].q.len();
        let (np, nv) = (d - d % 64, d - d % 16);
        let r16s = |x: f32| f16::from_f32(x).to_f32();
        let mut q16 = [[0.0f32; 256]; N];
        let mut m = [f32::NEG_INFINITY; N];
        let mut sum = [0.0f32; N];
        let mut n_max = 0;
        for i in 0..N {
            for (o, &x) in q16[i][..d].iter_mut().zip(jobs[i].q) {
                *o = r16s(x);
            }
            jobs[i].out.fill(0.0);
            n_max = n_max.max(jobs[i].n_keys);
        }
        let kp: [*const f16; N] =
            std::array::from_fn(|i| jobs[i].k.data.as_ptr().add(jobs[i].k.offset));
        let vp: [*const f16; N] =
            std::array::from_fn(|i| jobs[i].v.data.as_ptr().add(jobs[i].v.offset));
        let ks: [usize; N] = std::array::from_fn(|i| jobs[i].k.stride);
        let vs_: [usize; N] = std::array::from_fn(|i| jobs[i].v.stride);
        let nk: [usize; N] = std::array::from_fn(|i| jobs[i].n_keys);
        let ap: [*mut f32; N] = std::array::from_fn(|i| jobs[i].out.as_mut_ptr());
        for j in 0..n_max {
            let mut s = [0.0f32; N];
            for i in 0..N {
                if j >= nk[i] {
                    continue;
                }
                let kr = kp[i].add(j * ks[i]);
                let qp = q16[i].as_ptr();
                let mut a = [_mm512_setzero_ps(); 4];
                for e in (0..np).step_by(64) {
                    for (t, at) in a.iter_mut().enumerate() {
                        let o = e + 16 * t;
                        *at = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(o)), load16(kr.add(o)), *at);
                    }
                }
                let mut s64 = 0.0f64;
                if np > 0 {
                    s64 = reduce_ggml(a) as f64;
                }
                for kk in np..d {
                    s64 += (q16[i][kk] * (*kr.add(kk)).to_f32()) as f64;
                }
                s[i] = s64 as f32 * scale;
            }
            for i in 0..N {
                if j >= nk[i] {
                    continue;
                }
                let (vr, acc) = (vp[i].add(j * vs_[i]), ap[i]);
                let (mut ms, mut vs) = (1.0f32, 1.0f32);
                if s[i] > m[i] {
                    let old = m[i];
                    m[i] = s[i];
                    ms = super::softmax_exp(old - m[i]);
                    let msv = _mm512_set1_ps(ms);
                    for e in (0..nv).step_by(16) {
                        let x = _mm512_mul_ps(_mm512_loadu_ps(acc.add(e)), msv);
                        _mm512_storeu_ps(acc.add(e), r16(x));
                    }
                    for e in nv..d {
                        *acc.add(e) = r16s(*acc.add(e) * ms);
                    }
                } else {
                    vs = super::softmax_exp(s[i] - m[i]);
                }
                let vsv = _mm512_set1_ps(vs);
                for e in (0..nv).step_by(16) {
                    let x = _mm512_fmadd_ps(load16(vr.add(e)), vsv, _mm512_loadu_ps(acc.add(e)));
                    _mm512_storeu_ps(acc.add(e), r16(x));
                }
                for e in nv..d {
                    *acc.add(e) = r16s((*vr.add(e)).to_f32().mul_add(vs, *acc.add(e)));
                }
                sum[i] = sum[i].mul_add(ms, vs);
            }
        }
        for i in 0..N {
            let inv = if sum[i] == 0.0 { 0.0 } else { 1.0 / sum[i] };
            for a in jobs[i].out.iter_mut() {
                *a *= inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q8_0 attention in place: every level gives the scalar bits, and the
    /// result is the softmax attention (in f64) of the Q8_0-rounded query
    /// over the dequantized rows, within f32 rounding.
    #[test]
    fn q8_0_attention_is_the_attention_of_the_dequantized_rows() {
        let q8 = crate::kernels_for(crate::GgmlType::Q8_0).unwrap();
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0
        };
        for (d, n_keys, kv_heads) in [
            (32usize, 1usize, 1usize),
            (64, 37, 3),
            (128, 200, 2),
            (512, 5, 1),
        ] {
            let width = d * kv_heads;
            let rb = width / 32 * 34;
            let quant = |vals: &[f32]| {
                let mut b = vec![0u8; rb * n_keys];
                for (r, chunk) in vals.chunks(width).enumerate() {
                    q8.quantize(chunk, &mut b[r * rb..(r + 1) * rb]).unwrap();
                }
                b
            };
            let kv: Vec<f32> = (0..width * n_keys).map(|_| rnd()).collect();
            let vv: Vec<f32> = (0..width * n_keys).map(|_| rnd()).collect();
            let (kb, vb) = (quant(&kv), quant(&vv));
            let q: Vec<f32> = (0..d).map(|_| rnd()).collect();
            let scale = 1.0 / (d as f32).sqrt();
            for h in 0..kv_heads {
                let rows = |data| HeadRows {
                    data,
                    stride: rb,
                    offset: h * d / 32 * 34,
                };
                let mut want = vec![0.0f32; d];
                attend_q8_0_at(
                    crate::cpu::Level::Scalar,
                    &q,
                    rows(&kb),
                    rows(&vb),
                    n_keys,
                    scale,
                    &mut want,
                );
                for level in crate::cpu::available() {
                    let mut got = vec![0.0f32; d];
                    attend_q8_0_at(level, &q, rows(&kb), rows(&vb), n_keys, scale, &mut got);
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "d={d} {level:?}"
                    );
                }
                // the reference: f64 softmax attention of the rounded values
                let deq = |b: &[u8], j: usize| {
                    let mut o = vec![0.0f32; d];
                    q8.dequantize(&b[j * rb + h * d / 32 * 34..][..d / 32 * 34], &mut o)
                        .unwrap();
                    o
                };
                let mut qb = vec![0u8; d / 32 * 34];
                q8.quantize_act(&q, &mut qb).unwrap();
                let mut qd = vec![0.0f32; d];
                q8.dequantize(&qb, &mut qd).unwrap();
                let s: Vec<f64> = (0..n_keys)
                    .map(|j| {
                        let k = deq(&kb, j);
                        qd.iter()
                            .zip(&k)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = p.iter().sum();
                for e in 0..d {
                    let r: f64 = (0..n_keys)
                        .map(|j| p[j] * deq(&vb, j)[e] as f64)
                        .sum::<f64>()
                        / z;
                    assert!(
                        (want[e] as f64 - r).abs() <= 1e-5 * (1.0 + r.abs()),
                        "d={d} keys={n_keys} head {h} elem {e}: {} vs {r}",
                        want[e]
                    );
                }
            }
        }
    }

    #[test]
    fn f16_dot_equals_the_exact_dot_of_f16_values_closely() {
        // f16 inputs: products are exact in f32; only the sum order rounds
        let r16 = |x: f32| half::f16::from_f32(x).to_f32();
        let x: Vec<f32> = (0..200)
            .map(|i| r16(((i * 37 % 101) as f32 - 50.0) / 17.0))
            .collect();
        let y: Vec<f32> = (0..200)
            .map(|i| r16(((i * 53 % 89) as f32 - 44.0) / 13.0))
            .collect();
        let exact: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        let got = dot_f16_ggml(&x, &y) as f64;
        assert!(
            (got - exact).abs() <= 1e-5 * exact.abs().max(1.0),
            "{got} vs {exact}"
        );
    }

    /// Against f64's exp (an independent libm routine), rounded to f32: at
    /// most one ulp apart, and equal for all but a tiny fraction; -inf, huge
    /// negatives and subnormal results as f32 rounding says; NaN stays NaN.
    /// The 4-lane SIMD version gives the same bits.
    #[test]
    fn softmax_exp_is_correctly_rounded_nearly_always_and_simd_matches() {
        let reference = |x: f32| (x as f64).exp() as f32;
        let (mut n, mut off) = (0usize, 0usize);
        let mut xs: Vec<f32> = (0..2_000_000)
            .map(|i| -104.0 * (i as f32 / 2_000_000.0))
            .collect();
        xs.extend((0..20_000).map(|i| -(i as f32) * 1e-7));
        xs.extend([
            0.0, -0.0, -1e-30, -87.3, -103.0, -103.9, -104.5, -200.0, 3.0,
        ]);
        for &x in &xs {
            let (got, want) = (softmax_exp(x), reference(x));
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulps <= 1, "e^{x}: {got} vs {want}");
            off += (ulps != 0) as usize;
            n += 1;
        }
        let libm = xs.iter().filter(|&&x| softmax_exp(x) != x.exp()).count();
        eprintln!("{off} of {n} not correctly rounded; {libm} differ from f32::exp");
        assert!(off * 100_000 <= n, "{off} of {n} not correctly rounded");
        assert_eq!(softmax_exp(f32::NEG_INFINITY).to_bits(), 0);
        assert!(softmax_exp(f32::NAN).is_nan());
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::detected() >= crate::cpu::Level::Avx2 {
            for c in xs.chunks_exact(4) {
                let c = [c[0], c[1], c[2], c[3]];
                // SAFETY: AVX2 and FMA are detected on this CPU
                let got = unsafe { avx2::exp4(c) };
                for (g, &x) in got.iter().zip(&c) {
                    assert_eq!(g.to_bits(), softmax_exp(x).to_bits(), "e^{x}");
                }
            }
        }
    }

    /// The tiled prefill kernel: SIMD equals its scalar twin bit for bit;
    /// a row's result does not depend on the rows sharing its tile (each
    /// row alone gives the same bits); and it is the softmax-weighted mean
    /// of the values computed in f64, within f32 rounding.
    #[test]
    fn tiled_rows_attention_matches_twin_tiling_and_f64_reference() {
        let mut seed = 5u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 6.0
        };
        for d in [16usize, 24, 64, 72, 80, 128, 256, 3] {
            let (heads, n) = (2, 80);
            let stride = heads * d;
            let k: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let v: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let (qs, os) = (3 * d + 5, 2 * d + 1);
            let q: Vec<f32> = (0..40 * qs).map(|_| rnd()).collect();
            let h = |data| HeadRows {
                data,
                stride,
                offset: d,
            };
            for (rows, nk0) in [(1usize, 1usize), (5, 7), (16, 1), (17, 30), (40, 41)] {
                let run = |level, rows: usize, nk0: usize, first: usize| {
                    let mut out = vec![7.0f32; rows * os];
                    attend_f16_rows_at(
                        level,
                        RowsJob {
                            q: &q[first * qs..],
                            q_stride: qs,
                            q_offset: d + 2,
                            rows,
                            n_keys0: nk0,
                            k: h(&k),
                            v: h(&v),
                            out: &mut out,
                            out_stride: os,
                            out_offset: 1,
                            d,
                        },
                        0.25,
                    );
                    out
                };
                let want = run(crate::cpu::Level::Scalar, rows, nk0, 0);
                for level in crate::cpu::available() {
                    let got = run(level, rows, nk0, 0);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "d={d} rows={rows} nk0={nk0} {level:?}");
                    for i in [0, rows / 2, rows - 1] {
                        let alone = run(level, 1, nk0 + i, i);
                        let r = &got[i * os + 1..i * os + 1 + d];
                        assert!(
                            r.iter()
                                .zip(&alone[1..1 + d])
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "d={d} row {i} alone differs {level:?}"
                        );
                    }
                }
                for i in 0..rows {
                    let qi = &q[i * qs + d + 2..][..d];
                    let nkeys = nk0 + i;
                    let sc: Vec<f64> = (0..nkeys)
                        .map(|j| {
                            let kr = h(&k).row(j, d);
                            qi.iter()
                                .zip(kr)
                                .map(|(a, b)| *a as f64 * b.to_f32() as f64)
                                .sum::<f64>()
                                * 0.25
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                    let tot: f64 = w.iter().sum();
                    for e in 0..d {
                        let r: f64 = (0..nkeys)
                            .map(|j| w[j] * h(&v).row(j, d)[e].to_f32() as f64)
                            .sum::<f64>()
                            / tot;
                        let g = want[i * os + 1 + e] as f64;
                        assert!(
                            (g - r).abs() <= 1e-4 * (1.0 + r.abs()),
                            "d={d} row {i} [{e}]: {g} vs {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn tile_exp_is_close_to_exp_and_exact_at_zero_and_underflow() {
        for i in 0..200_000 {
            let x = -90.0 * i as f32 / 200_000.0;
            let (got, want) = (tile_exp(x) as f64, (x as f64).exp());
            assert!(
                (got - want).abs() <= 4e-7 * want + 1e-38,
                "e^{x}: {got} vs {want}"
            );
        }
        assert_eq!(tile_exp(0.0), 1.0);
        assert_eq!(tile_exp(-88.0), 0.0);
        assert_eq!(tile_exp(f32::NEG_INFINITY), 0.0);
        assert!(tile_exp(f32::NAN).is_nan());
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::detected() >= crate::cpu::Level::Avx512 {
            for i in 0..20_000 {
                let xs: [f32; 16] = std::array::from_fn(|l| (i * 16 + l) as f32 * -3e-4);
                let mut got = [0.0f32; 16];
                // SAFETY: AVX-512 is detected on this CPU
                unsafe {
                    use std::arch::x86_64::*;
                    _mm512_storeu_ps(got.as_mut_ptr(), x86::exp16(_mm512_loadu_ps(xs.as_ptr())));
                }
                for (g, &x) in got.iter().zip(&xs) {
                    assert_eq!(g.to_bits(), tile_exp(x).to_bits(), "e^{x}");
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::detected() >= crate::cpu::Level::Avx2 {
            let mut xs: Vec<f32> = (0..160_000).map(|i| i as f32 * -6e-4).collect();
            xs.extend([0.0, -0.0, -88.0, -100.0, f32::NEG_INFINITY, f32::NAN, 1.5]);
            xs.resize(xs.len().next_multiple_of(8), -1.0);
            for c in xs.chunks_exact(8) {
                let mut got = [0.0f32; 8];
                // SAFETY: AVX2 and FMA are detected on this CPU
                unsafe {
                    use std::arch::x86_64::*;
                    _mm256_storeu_ps(got.as_mut_ptr(), avx2::exp8(_mm256_loadu_ps(c.as_ptr())));
                }
                for (g, &x) in got.iter().zip(c) {
                    let want = tile_exp(x);
                    let same = g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan());
                    assert!(same, "e^{x}: {g} vs {want}");
                }
            }
        }
    }

    fn rows(v: &[Vec<f32>]) -> Vec<f16> {
        v.iter().flatten().map(|&x| f16::from_f32(x)).collect()
    }

    #[test]
    fn attention_over_one_key_returns_its_value_and_weights_follow_scores() {
        let k = rows(&[vec![1.0f32; 4], vec![-1.0f32; 4]]);
        let vv = [vec![0.5f32, 1.0, -2.0, 4.0], vec![2.0f32, 0.0, 1.0, -1.0]];
        let v = rows(&vv);
        let h = |data| HeadRows {
            data,
            stride: 4,
            offset: 0,
        };
        let mut out = vec![0.0f32; 4];
        for level in crate::cpu::available() {
            attend_f16_at(level, &[1.0; 4], h(&k), h(&v), 1, 0.5, &mut out);
            assert_eq!(out, vv[0]);
            // two keys: weights softmax(2, -2) = (0.982, 0.018) within f16 rounding
            attend_f16_at(level, &[1.0; 4], h(&k), h(&v), 2, 0.5, &mut out);
            let w0 = 1.0 / (1.0 + (-4.0f32).exp());
            for i in 0..4 {
                let want = w0 * vv[0][i] + (1.0 - w0) * vv[1][i];
                assert!((out[i] - want).abs() < 4e-3, "{i}: {} vs {want}", out[i]);
            }
        }
    }

    /// The SIMD kernel equals the scalar one bit for bit: head sizes with
    /// and without 64- and 16-element tails, strided rows with an offset
    /// (a KV head inside a GQA cache row), 0 to 40 keys.
    #[test]
    fn simd_attention_equals_its_scalar_twin_bitwise() {
        let mut seed = 99u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 6.0
        };
        for d in [16usize, 20, 64, 72, 80, 128, 256, 3] {
            let (heads, offset) = (3, d);
            let stride = heads * d;
            let n = 40;
            let k: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let v: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let q: Vec<f32> = (0..d).map(|_| rnd()).collect();
            let h = |data| HeadRows {
                data,
                stride,
                offset,
            };
            for n_keys in [0usize, 1, 2, 7, 40] {
                let mut want = vec![0.0f32; d];
                attend_f16_at(
                    crate::cpu::Level::Scalar,
                    &q,
                    h(&k),
                    h(&v),
                    n_keys,
                    0.3,
                    &mut want,
                );
                for level in crate::cpu::available() {
                    let mut got = vec![1.0f32; d];
                    attend_f16_at(level, &q, h(&k), h(&v), n_keys, 0.3, &mut got);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "d={d} n_keys={n_keys} {level:?}: {got:?} vs {want:?}");
                }
            }
        }
    }

    /// The batch (four jobs in lockstep) equals single jobs bit for bit,
    /// with different key counts, heads and head sizes per batch.
    #[test]
    fn batched_attention_equals_single_jobs_bitwise() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 6.0
        };
        for d in [20usize, 64, 80, 128, 256] {
            let (heads, n) = (3, 30);
            let stride = heads * d;
            let k: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let v: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let qs: Vec<Vec<f32>> = (0..7).map(|_| (0..d).map(|_| rnd()).collect()).collect();
            let nks = [30usize, 1, 17, 0, 29, 30, 5];
            let h = |data, head: usize| HeadRows {
                data,
                stride,
                offset: head * d,
            };
            let mut want: Vec<Vec<f32>> = vec![vec![0.0; d]; 7];
            for (i, w) in want.iter_mut().enumerate() {
                let kv = i % heads;
                attend_f16_at(
                    crate::cpu::Level::Scalar,
                    &qs[i],
                    h(&k, kv),
                    h(&v, kv),
                    nks[i],
                    0.2,
                    w,
                );
            }
            for level in crate::cpu::available() {
                let mut got: Vec<Vec<f32>> = vec![vec![9.0; d]; 7];
                let mut jobs: Vec<AttnJob> = got
                    .iter_mut()
                    .enumerate()
                    .map(|(i, out)| AttnJob {
                        q: &qs[i],
                        k: h(&k, i % heads),
                        v: h(&v, i % heads),
                        n_keys: nks[i],
                        out,
                    })
                    .collect();
                attend_f16_batch_at(level, &mut jobs, 0.2);
                for i in 0..7 {
                    let same = got[i]
                        .iter()
                        .zip(&want[i])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "d={d} job {i} {level:?}");
                }
            }
        }
    }
}
