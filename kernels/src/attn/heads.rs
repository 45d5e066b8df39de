//! Decode attention of several query heads of one row at once, over an f16
//! cache, with the result of [`super::attend_f16`] for each head bit for
//! bit (llama.cpp's CPU flash-attention order: q rounded to f16, ggml's f16
//! dot, an online softmax by [`super::softmax_exp`], the output accumulated
//! in f16 after every key).
//!
//! What differs is the order memory is read in. One head's slice of a cache
//! row is a short run (128 bytes for a head of 64) at the row's stride;
//! walking a head down its keys, as the one-head kernels do, touches memory
//! in a pattern the hardware prefetchers follow poorly, and decode at depth
//! reads the whole cache from memory every token. Here the keys go in
//! blocks of [`KEY_BLOCK`]: for each key of a block every head's score in
//! turn (so each row is read front to back), then each head's softmax
//! factors (the `exp` of all the block's keys at once), then each key's
//! value row, again every head in turn. Between one key and the next a
//! head's f16 accumulator waits on its own rounding chain only, and the
//! other heads' work fills that wait.
//!
//! The same holds for a thread: one that reads part of every row gets a
//! fraction of the bandwidth of one that reads whole rows. So a long cache
//! is cut into key ranges instead of head ranges: each range's unfinished
//! state ([`attend_f16_heads_part_at`]) on its own thread, then
//! [`combine`] per head. That is no longer llama.cpp's single pass, but
//! the same attention within f16 accumulation.

use super::HeadRows;
use half::f16;

/// Keys per block.
pub const KEY_BLOCK: usize = 16;

/// Whether the row-ordered kernel takes heads of `d` values on this level
/// (elsewhere [`attend_f16_heads_at`] runs the one-head kernel per head).
pub fn row_ordered(level: crate::cpu::Level, d: usize) -> bool {
    level >= crate::cpu::Level::Avx512 && d.is_multiple_of(64) && (64..=256).contains(&d)
}

/// Values of one head's part of a key range ([`attend_f16_heads_part_at`]):
/// the running max, the sum, then the f16 accumulator of `d` values.
pub fn part_len(d: usize) -> usize {
    d + 2
}

/// Query heads `first..first + q.len() / d` of one row over an f16 cache:
/// head `h` is `q[(h - first) * d..][..d]` and reads KV head `h / group`, at
/// `(h / group) * d` in each cache row of `stride` values.
#[derive(Clone, Copy)]
pub struct Heads<'a> {
    pub q: &'a [f32],
    pub first: usize,
    pub d: usize,
    pub group: usize,
    pub k: &'a [f16],
    pub v: &'a [f16],
    pub stride: usize,
    pub scale: f32,
}

impl<'a> Heads<'a> {
    fn count(&self) -> usize {
        self.q.len() / self.d
    }

    fn rows(&self, data: &'a [f16], h: usize) -> HeadRows<'a, f16> {
        HeadRows {
            data,
            stride: self.stride,
            offset: h / self.group * self.d,
        }
    }

    /// Checks the heads and that keys `0..to` are in bounds for all.
    fn check(&self, level: crate::cpu::Level, to: usize) {
        let d = self.d;
        assert!(d > 0 && self.group > 0 && self.q.len().is_multiple_of(d));
        let n = self.count();
        // the last head reads the furthest KV head: if its rows are in
        // bounds, every head's are
        if n > 0 {
            let last = self.first + n - 1;
            assert!(
                self.rows(self.k, last).holds(to, d) && self.rows(self.v, last).holds(to, d),
                "rows out of bounds"
            );
        }
        assert!(level <= crate::cpu::detected());
    }
}

/// Each head of `heads` over the first `n_keys` cache rows, written to
/// `out[(h - first) * d..][..d]`, exactly as [`super::attend_f16_at`]
/// computes it for that head.
///
/// # Panics
/// If `q` and `out` are not the same whole number of heads, `group` is 0,
/// a row lies out of bounds, or `level` is above [`crate::cpu::detected`].
pub fn attend_f16_heads_at(
    level: crate::cpu::Level,
    heads: Heads<'_>,
    n_keys: usize,
    out: &mut [f32],
) {
    heads.check(level, n_keys);
    let d = heads.d;
    assert_eq!(out.len(), heads.q.len());
    if row_ordered(level, d) {
        passes(heads, 0..n_keys, out, d, 0, |o, st| {
            let inv = if st[1] == 0.0 { 0.0 } else { 1.0 / st[1] };
            o.iter_mut().for_each(|x| *x *= inv);
        });
        return;
    }
    for (i, (qh, o)) in heads
        .q
        .chunks_exact(d)
        .zip(out.chunks_exact_mut(d))
        .enumerate()
    {
        let h = heads.first + i;
        super::attend_f16_at(
            level,
            qh,
            heads.rows(heads.k, h),
            heads.rows(heads.v, h),
            n_keys,
            heads.scale,
            o,
        );
    }
}

/// Each head of `heads` over the cache rows `keys` only, left unfinished:
/// its part (`[m, sum, acc..]`, [`part_len`] values) goes to
/// `parts[(h - first) * part_len(d)..]`; [`combine`] finishes a head from
/// the parts of consecutive ranges. Over one range starting at 0 that is
/// [`attend_f16_heads_at`] before its last step.
///
/// # Panics
/// As [`attend_f16_heads_at`], or if `parts` is not one part per head.
pub fn attend_f16_heads_part_at(
    level: crate::cpu::Level,
    heads: Heads<'_>,
    keys: std::ops::Range<usize>,
    parts: &mut [f32],
) {
    heads.check(level, keys.end);
    let (d, pl) = (heads.d, part_len(heads.d));
    assert_eq!(parts.len(), heads.count() * pl);
    if row_ordered(level, d) {
        passes(heads, keys, parts, pl, 2, |p, st| {
            p[..2].copy_from_slice(&st)
        });
        return;
    }
    for (i, (qh, p)) in heads
        .q
        .chunks_exact(d)
        .zip(parts.chunks_exact_mut(pl))
        .enumerate()
    {
        let h = heads.first + i;
        let (m, sum) = super::attend_f16_state(
            qh,
            heads.rows(heads.k, h),
            heads.rows(heads.v, h),
            keys.clone(),
            heads.scale,
            &mut p[2..],
        );
        p[0] = m;
        p[1] = sum;
    }
}

/// Finishes one head from the parts of `n` consecutive key ranges, part
/// `i` at `parts[i * pitch..][..part_len(d)]`, into `out` (`d` values):
/// with `M` the largest running max and `w_i = softmax_exp(m_i - M)`,
/// `acc = fma(acc_i, w_i, acc)` and `sum = fma(sum_i, w_i, sum)` range by
/// range, then `acc * (1 / sum)` (0 where the sum is 0). Ranges without
/// keys weigh nothing.
///
/// # Panics
/// If a part lies outside `parts`.
pub fn combine(parts: &[f32], pitch: usize, n: usize, out: &mut [f32]) {
    let d = out.len();
    let part = |i: usize| &parts[i * pitch..][..part_len(d)];
    let top = (0..n).fold(f32::NEG_INFINITY, |a, i| {
        if part(i)[0] > a {
            part(i)[0]
        } else {
            a
        }
    });
    out.fill(0.0);
    let mut sum = 0.0f32;
    for i in 0..n {
        let p = part(i);
        if p[0] == f32::NEG_INFINITY {
            continue;
        }
        let w = super::softmax_exp(p[0] - top);
        sum = p[1].mul_add(w, sum);
        for (o, a) in out.iter_mut().zip(&p[2..]) {
            *o = a.mul_add(w, *o);
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|o| *o *= inv);
}

/// Heads one pass of the row-ordered kernel takes.
const MAX_PASS: usize = 16;

/// The row-ordered kernel over `keys` for every head, [`MAX_PASS`] heads a
/// pass: head `i` owns `out[i * pitch..][..pitch]`, its accumulator from
/// `lead` on; then `finish(that slice, [max, sum])` for each head.
///
/// # Panics
/// If `out` is not `pitch` values per head or a head's accumulator does not
/// fit its slice.
fn passes(
    heads: Heads<'_>,
    keys: std::ops::Range<usize>,
    out: &mut [f32],
    pitch: usize,
    lead: usize,
    mut finish: impl FnMut(&mut [f32], [f32; 2]),
) {
    let d = heads.d;
    assert!(lead + d <= pitch && out.len() == heads.count() * pitch);
    let mut state = [[0.0f32; 2]; MAX_PASS];
    for (c, oc) in out.chunks_mut(MAX_PASS * pitch).enumerate() {
        let n = oc.len() / pitch;
        let pass = Heads {
            q: &heads.q[c * MAX_PASS * d..][..n * d],
            first: heads.first + c * MAX_PASS,
            ..heads
        };
        // SAFETY: the callers checked `row_ordered` (the level is
        // detected; `Heads::check` asserted it) and that keys `keys` are
        // in bounds for every head; the pass writes n accumulators of d
        // values at `lead`, `pitch` apart, inside `oc` (asserted above).
        unsafe {
            run(
                pass,
                keys.clone(),
                oc.as_mut_ptr().add(lead),
                pitch,
                &mut state[..n],
            )
        };
        for (o, st) in oc.chunks_exact_mut(pitch).zip(&state[..n]) {
            finish(o, *st);
        }
    }
}

/// The row-ordered kernel for one pass of heads (at most [`MAX_PASS`]).
///
/// # Safety
/// `row_ordered(detected level, d)`; keys `keys` in bounds for every head;
/// `acc` points at room for `n` heads of `d` values `pitch` apart.
#[cfg(target_arch = "x86_64")]
unsafe fn run(
    heads: Heads<'_>,
    keys: std::ops::Range<usize>,
    acc: *mut f32,
    pitch: usize,
    state: &mut [[f32; 2]],
) {
    match heads.d / 64 {
        1 => x86::attend::<1>(heads, keys, acc, pitch, state),
        2 => x86::attend::<2>(heads, keys, acc, pitch, state),
        3 => x86::attend::<3>(heads, keys, acc, pitch, state),
        _ => x86::attend::<4>(heads, keys, acc, pitch, state),
    }
}

/// No row-ordered kernel off x86-64 (`row_ordered` is false there).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn run(_: Heads<'_>, _: std::ops::Range<usize>, _: *mut f32, _: usize, _: &mut [[f32; 2]]) {
    unreachable!("row_ordered is false off x86-64")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::KEY_BLOCK;
    use half::f16;
    use std::arch::x86_64::*;

    use super::super::x86::{load16, r16, reduce_ggml};
    use super::{Heads, MAX_PASS as HEADS};

    /// The module's kernel for heads of `64 * C` values over the keys
    /// `keys`: head `i`'s f16 accumulator at `acc + i * pitch`, its running
    /// max and sum in `state[i]`.
    ///
    /// # Safety
    /// The CPU has AVX-512; `heads.q` is 1 to [`HEADS`] heads of `64 * C`,
    /// `state` one entry per head; the keys are in bounds for every head;
    /// `acc` has room for the heads at `pitch`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    pub unsafe fn attend<const C: usize>(
        job: Heads<'_>,
        keys: std::ops::Range<usize>,
        op: *mut f32,
        pitch: usize,
        state: &mut [[f32; 2]],
    ) {
        let d = 64 * C;
        let n = job.q.len() / d;
        debug_assert!((1..=HEADS).contains(&n) && state.len() == n);
        let mut q16 = [[0.0f32; 256]; HEADS];
        let mut off = [0usize; HEADS];
        for i in 0..n {
            for (o, &x) in q16[i][..d].iter_mut().zip(&job.q[i * d..][..d]) {
                *o = f16::from_f32(x).to_f32();
            }
            off[i] = (job.first + i) / job.group * d;
            std::ptr::write_bytes(op.add(i * pitch), 0, d);
        }
        let (kp, vp) = (job.k.as_ptr(), job.v.as_ptr());
        let mut m = [f32::NEG_INFINITY; HEADS];
        let mut sum = [0.0f32; HEADS];
        for b in keys.clone().step_by(KEY_BLOCK) {
            let kb = (keys.end - b).min(KEY_BLOCK);
            // scores, row by row
            let mut s = [[0.0f32; KEY_BLOCK]; HEADS];
            for t in 0..kb {
                let kr = kp.add((b + t) * job.stride);
                for i in 0..n {
                    let (kh, qh) = (kr.add(off[i]), q16[i].as_ptr());
                    let mut a = [_mm512_setzero_ps(); 4];
                    for e in 0..C {
                        for (j, aj) in a.iter_mut().enumerate() {
                            let o = 64 * e + 16 * j;
                            *aj =
                                _mm512_fmadd_ps(_mm512_loadu_ps(qh.add(o)), load16(kh.add(o)), *aj);
                        }
                    }
                    s[i][t] = reduce_ggml(a) * job.scale;
                }
            }
            // each head's factors: the running max key by key, then every
            // exp of the block together
            let mut grew = [[false; KEY_BLOCK]; HEADS];
            let mut e = [[0.0f32; KEY_BLOCK]; HEADS];
            for i in 0..n {
                let mut x = [0.0f32; KEY_BLOCK];
                for t in 0..kb {
                    let st = s[i][t];
                    if st > m[i] {
                        x[t] = m[i] - st;
                        m[i] = st;
                        grew[i][t] = true;
                    } else {
                        x[t] = st - m[i];
                    }
                }
                for c in (0..kb).step_by(4) {
                    let y = super::super::avx2::exp4([x[c], x[c + 1], x[c + 2], x[c + 3]]);
                    e[i][c..c + 4].copy_from_slice(&y);
                }
            }
            // values, row by row
            for t in 0..kb {
                let vr = vp.add((b + t) * job.stride);
                for i in 0..n {
                    let (vh, acc) = (vr.add(off[i]), op.add(i * pitch));
                    let (ms, vs) = if grew[i][t] {
                        (e[i][t], 1.0f32)
                    } else {
                        (1.0f32, e[i][t])
                    };
                    let vsv = _mm512_set1_ps(vs);
                    if grew[i][t] {
                        let msv = _mm512_set1_ps(ms);
                        for l in 0..4 * C {
                            let a = _mm512_loadu_ps(acc.add(16 * l));
                            _mm512_storeu_ps(acc.add(16 * l), r16(_mm512_mul_ps(a, msv)));
                        }
                    }
                    for l in 0..4 * C {
                        let a = _mm512_loadu_ps(acc.add(16 * l));
                        let y = _mm512_fmadd_ps(load16(vh.add(16 * l)), vsv, a);
                        _mm512_storeu_ps(acc.add(16 * l), r16(y));
                    }
                    sum[i] = sum[i].mul_add(ms, vs);
                }
            }
        }
        for i in 0..n {
            state[i] = [m[i], sum[i]];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// Every level, for head sizes the row-ordered kernel takes and some it
    /// does not, grouped heads, more heads than a pass takes, key counts
    /// around the block size and padded rows: every head (all at once, or a
    /// range of them) has the bits of the one-head scalar kernel; parts of
    /// key ranges have the scalar twin's bits, and combined they are the
    /// softmax attention in f64 of the same values within a stated bound.
    #[test]
    fn every_head_is_the_one_head_scalar_kernel_and_parts_combine() {
        let mut seed = 5u64;
        for d in [32usize, 48, 64, 128, 192, 256] {
            for (n_kv, group) in [(1usize, 1usize), (3, 3), (2, 12), (20, 1)] {
                for n_keys in [1usize, 3, 15, 16, 17, 40] {
                    let n_head = n_kv * group;
                    let stride = n_kv * d + 8;
                    let mut vals =
                        |n| -> Vec<f16> { (0..n).map(|_| f16::from_f32(rnd(&mut seed))).collect() };
                    let (k, v) = (vals(stride * n_keys), vals(stride * n_keys));
                    let q: Vec<f32> = (0..n_head * d).map(|_| rnd(&mut seed)).collect();
                    let heads = Heads {
                        q: &q,
                        first: 0,
                        d,
                        group,
                        k: &k,
                        v: &v,
                        stride,
                        scale: 1.0 / (d as f32).sqrt(),
                    };
                    let mut want = vec![0.0f32; n_head * d];
                    for (h, o) in want.chunks_exact_mut(d).enumerate() {
                        super::super::attend_f16_at(
                            crate::cpu::Level::Scalar,
                            &q[h * d..][..d],
                            heads.rows(&k, h),
                            heads.rows(&v, h),
                            n_keys,
                            heads.scale,
                            o,
                        );
                    }
                    let pl = part_len(d);
                    let cut = n_keys / 2 + 1;
                    let parts_at = |level, keys: std::ops::Range<usize>| {
                        let mut p = vec![f32::NAN; n_head * pl];
                        attend_f16_heads_part_at(level, heads, keys, &mut p);
                        p
                    };
                    let scalar = crate::cpu::Level::Scalar;
                    let want_parts = [parts_at(scalar, 0..cut), parts_at(scalar, cut..n_keys)];
                    for level in crate::cpu::available() {
                        let what =
                            format!("d {d}, {n_head} heads / {group}, {n_keys} keys, {level:?}");
                        let mut got = vec![f32::NAN; n_head * d];
                        attend_f16_heads_at(level, heads, n_keys, &mut got);
                        assert_eq!(bits(&got), bits(&want), "{what}");
                        let (h0, h1) = (n_head / 3, n_head - n_head / 4);
                        let range = Heads {
                            q: &q[h0 * d..h1 * d],
                            first: h0,
                            ..heads
                        };
                        let mut part = vec![f32::NAN; (h1 - h0) * d];
                        attend_f16_heads_at(level, range, n_keys, &mut part);
                        assert_eq!(
                            bits(&part),
                            bits(&want[h0 * d..h1 * d]),
                            "heads {h0}..: {what}"
                        );
                        // one range from 0 is the whole kernel before its last step
                        let whole = parts_at(level, 0..n_keys);
                        for (h, p) in whole.chunks_exact(pl).enumerate() {
                            let inv = 1.0 / p[1];
                            let fin: Vec<f32> = p[2..].iter().map(|a| a * inv).collect();
                            assert_eq!(
                                bits(&fin),
                                bits(&want[h * d..][..d]),
                                "head {h} whole: {what}"
                            );
                        }
                        assert_eq!(
                            bits(&parts_at(level, 0..cut)),
                            bits(&want_parts[0]),
                            "{what}"
                        );
                        assert_eq!(
                            bits(&parts_at(level, cut..n_keys)),
                            bits(&want_parts[1]),
                            "{what}"
                        );
                    }
                    // the two ranges combined: the attention, within f16
                    // accumulation (the accumulator rounds to f16 after
                    // every key: relative error about 2^-11 per step)
                    let both = [want_parts[0].clone(), want_parts[1].clone()].concat();
                    for h in 0..n_head {
                        let mut o = vec![0.0f32; d];
                        combine(&both[h * pl..], n_head * pl, 2, &mut o);
                        let at = |j: usize| j * stride + h / group * d;
                        let s: Vec<f64> = (0..n_keys)
                            .map(|j| {
                                q[h * d..][..d]
                                    .iter()
                                    .zip(&k[at(j)..][..d])
                                    .map(|(a, b)| f16::from_f32(*a).to_f64() * b.to_f64())
                                    .sum::<f64>()
                                    * heads.scale as f64
                            })
                            .collect();
                        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let p: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                        let z: f64 = p.iter().sum();
                        for e in 0..d {
                            let r = (0..n_keys)
                                .map(|j| p[j] * v[at(j) + e].to_f64())
                                .sum::<f64>()
                                / z;
                            assert!(
                                (o[e] as f64 - r).abs() < 2e-2,
                                "d {d}, {n_keys} keys, head {h}: {} vs {r}",
                                o[e]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ranges_without_keys_weigh_nothing() {
        let vals: Vec<f16> = (0..64)
            .map(|i| f16::from_f32(i as f32 * 0.25 - 3.0))
            .collect();
        let keys = vec![f16::from_f32(0.5); 64];
        let q = vec![1.0f32; 64];
        let heads = Heads {
            q: &q,
            first: 0,
            d: 64,
            group: 1,
            k: &keys,
            v: &vals,
            stride: 64,
            scale: 0.125,
        };
        for level in crate::cpu::available() {
            let mut parts = vec![0.0f32; 2 * 66];
            attend_f16_heads_part_at(level, heads, 0..0, &mut parts[..66]);
            attend_f16_heads_part_at(level, heads, 0..1, &mut parts[66..]);
            let mut out = vec![f32::NAN; 64];
            combine(&parts, 66, 2, &mut out);
            for (o, v) in out.iter().zip(&vals) {
                assert_eq!(*o, v.to_f32(), "{level:?}");
            }
            combine(&parts, 66, 1, &mut out);
            assert!(out.iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn rows_past_the_cache_are_refused() {
        let k = vec![f16::ZERO; 64 * 3];
        let heads = Heads {
            q: &[0.0; 64],
            first: 0,
            d: 64,
            group: 1,
            k: &k,
            v: &k,
            stride: 64,
            scale: 1.0,
        };
        attend_f16_heads_at(crate::cpu::detected(), heads, 4, &mut [0.0; 64]);
    }
}
