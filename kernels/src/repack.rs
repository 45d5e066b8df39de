//! Weights re-laid out once at load into groups of sixteen interleaved rows,
//! so one 512-bit `vpdpbusd` with a broadcast activation word feeds sixteen
//! rows (AVX-512 VNNI), or one 256-bit `vpmaddubsw` eight (AVX2, in
//! `repack/avx2.rs`, for every type below).
//! The file stays canonical and mapped; this is a copy made once.
//!
//! Layouts, per group of 16 rows and per 32-element block:
//! - Q4_0x16: the 16 f16 scales (32 bytes), then 4 steps of 64 bytes: step s
//!   holds, for row r = 0..16, bytes `qs[4s..4s+4]` of that row's block, whose
//!   low nibbles are elements 4s..4s+4 and high nibbles 16+4s..16+4s+4
//!   (288 bytes = 16 blocks of 18).
//! - Q8_0x16: the 16 scales, then 8 steps of 64 bytes: step s holds, for each
//!   row, elements 4s..4s+4 offset by 128 (stored unsigned) (544 = 16 x 34).
//!
//! - Q4_Kx16, per 256-element super-block: the 16 d (32 bytes), the 16
//!   dmin (32), the eight sub-block scales of the 16 rows as bytes (8 x 16),
//!   the eight minimums in four pairs (pair p: per row the minimums of
//!   sub-blocks 2p and 2p + 1, 4 x 32 bytes), then 32 steps of 64 bytes: step
//!   8c + s holds, for each row, bytes `qs[32c + 4s..][..4]` (low nibbles:
//!   sub-block 2c, elements 4s..4s+4; high nibbles: sub-block 2c + 1)
//!   (2368 bytes = 16 rows of 148, for 144 in the file). Its sums are those
//!   of the canonical Q4_K dot (exact integers per super-block, then one f32
//!   expression), so it equals that dot bit for bit.
//!
//! - Q5_Kx16: the Q4_Kx16 layout (from the block's `qs`), then the fifth
//!   bits: 8 steps of 64 bytes, step s holding per row `qh[4s..][..4]`
//!   (bit 2c of `qh[l]` for element 64c + l, bit 2c + 1 for 64c + 32 + l)
//!   (2880 bytes = 16 rows of 180, for 176); equal bit for bit to the
//!   canonical Q5_K dot, like Q4_K.
//! - Q5_0x16: the Q4_0x16 layout, then 64 bytes of fifth bits: per row four
//!   bytes, byte k holding at bit 2s the fifth bit of element 4s + k and at
//!   bit 2s + 1 that of element 16 + 4s + k (352 bytes = 16 blocks of 22).
//! - Q5_1x16: the 16 scales (32 bytes), the 16 minimums (32), then Q5_0x16's
//!   4 steps of nibbles and 64 bytes of fifth bits (384 bytes = 16 x 24).
//!   Activations are Q8_1, whose blocks carry `s = d * sum(q)`.
//!   Per row, `acc = fma(d_w * d_x, isum, acc)` and `summ = fma(m_w, s_x,
//!   summ)` block by block, then `acc + summ`.
//! - Q4_1x16, laid out for ggml's own Q4_1 x Q8_1 order (eight f32 lanes per
//!   row, lane l summing elements 4l..4l+4 of each block; then
//!   `hsum_float_8(acc) + summs`), so it equals the canonical dot bit for
//!   bit; rows go in pairs (2p, 2p + 1) sharing one 512-bit register. Per
//!   two blocks (i, i + 1): the 16 scales of block i (32 bytes), of i + 1
//!   (32), the 16 minimums of i (32), of i + 1 (32), then per pair p 64
//!   bytes: byte k < 32 holds element k of row 2p, block i (low nibble) and
//!   block i + 1 (high); byte 32 + k the same for row 2p + 1 (640 bytes =
//!   2 x 16 x 20). An odd last block: its 16 scales, 16 minimums, then per
//!   pair 32 bytes, byte k holding element k of row 2p (low) and of row
//!   2p + 1 (high) (320 bytes).
//!
//! - Q6_Kx16, per super-block: the 16 d (32 bytes), the 16 signed scales of
//!   each of the 16 sub-blocks (16 x 16), then for half h and step s (0..8)
//!   three 64-byte parts: per row `ql[64h + 4s..][..4]`, `ql[64h + 32 +
//!   4s..][..4]` and `qh[32h + 4s..][..4]` (3360 bytes = 16 rows of 210, as
//!   in the file); equal bit for bit to the canonical Q6_K dot likewise.
//!
//! Order of the sums for Q4_0, Q5_0 and Q8_0 (defined here, the same in the scalar twin and the
//! SIMD kernel, bitwise): per row and block, the exact integer dot
//! `isum = sum(q * y)` (from the unsigned levels minus offset * sum(y)),
//! then `acc = fma(d_w * d_x, isum, acc)`, blocks in order, one accumulator
//! per row. This is not ggml's vec_dot order (llama.cpp repacks these types
//! too, in orders of its own), so results agree with it closely, not bit
//! for bit.

use crate::fp::f16_to_f32;
use crate::types::GgmlType;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Rows per group.
pub const ROWS: usize = 16;

/// Bytes of a Q4_K super-block group.
const Q4K_GROUP: usize = 64 + 256 + 32 * 64;

/// Bytes of a Q5_K super-block group: Q4_K's and the fifth bits.
const Q5K_GROUP: usize = Q4K_GROUP + 8 * 64;

/// Bytes of a Q5_0 block group: Q4_0's and the fifth bits.
const Q50_GROUP: usize = 18 * ROWS + 64;

/// Bytes of a Q5_1 block group.
const Q51_GROUP: usize = 24 * ROWS;

/// Bytes of a Q4_1 block group.
const Q41_GROUP: usize = 20 * ROWS;

/// Bytes of a Q6_K super-block group.
const Q6K_GROUP: usize = 32 + 256 + 2 * 8 * 3 * 64;

/// Bytes of one block group (16 rows x one block).
fn group_block_bytes(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 => Some(18 * ROWS),
        GgmlType::Q8_0 => Some(34 * ROWS),
        GgmlType::Q4K => Some(Q4K_GROUP),
        GgmlType::Q5K => Some(Q5K_GROUP),
        GgmlType::Q5_0 => Some(Q50_GROUP),
        GgmlType::Q5_1 => Some(Q51_GROUP),
        GgmlType::Q4_1 => Some(Q41_GROUP),
        GgmlType::Q6K => Some(Q6K_GROUP),
        _ => None,
    }
}

/// Whether `ty` with `n_out` rows can be repacked.
pub fn supported(ty: GgmlType, n_out: usize) -> bool {
    group_block_bytes(ty).is_some() && n_out.is_multiple_of(ROWS) && n_out > 0
}

/// Repacks `n_out` rows of `n_in` values (`data`, canonical blocks) into
/// groups; `None` for types or shapes this file does not handle.
pub fn repack(ty: GgmlType, data: &[u8], n_in: usize, n_out: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; packed_len(ty, n_in, n_out)?];
    repack_into(ty, data, n_in, n_out, &mut out).then_some(out)
}

/// Bytes of the repacked form of `n_out` rows of `n_in` values, `None`
/// for types or shapes this file does not handle.
pub fn packed_len(ty: GgmlType, n_in: usize, n_out: usize) -> Option<usize> {
    if !supported(ty, n_out) || !n_in.is_multiple_of(ty.block_len()) {
        return None;
    }
    Some(n_out / ROWS * (n_in / ty.block_len()) * group_block_bytes(ty)?)
}

/// [`repack`] into `out` (exactly [`packed_len`] bytes); false, with
/// nothing written, when the type, shape or lengths do not fit. Whole row
/// groups are independent, so parts of a matrix may be repacked apart.
pub fn repack_into(ty: GgmlType, data: &[u8], n_in: usize, n_out: usize, out: &mut [u8]) -> bool {
    let (Some(len), Some(gbb)) = (packed_len(ty, n_in, n_out), group_block_bytes(ty)) else {
        return false;
    };
    let nb = n_in / ty.block_len();
    let (bb, rb) = (ty.block_bytes(), nb * ty.block_bytes());
    if data.len() != rb * n_out || out.len() != len {
        return false;
    }
    for (g, dst) in out.chunks_exact_mut(nb * gbb).enumerate() {
        if ty == GgmlType::Q4_1 {
            dst.fill(0);
            for r in 0..ROWS {
                for i in 0..nb {
                    let b = &data[(g * ROWS + r) * rb + i * bb..][..bb];
                    let at = q41_at(nb, i, r);
                    dst[at.d..at.d + 2].copy_from_slice(&b[0..2]);
                    dst[at.m..at.m + 2].copy_from_slice(&b[2..4]);
                    for e in 0..32 {
                        let q = (b[4 + e % 16] >> (4 * (e / 16))) & 0x0f;
                        dst[at.q + e] |= q << at.shift;
                    }
                }
            }
            continue;
        }
        for i in 0..nb {
            let o = &mut dst[i * gbb..(i + 1) * gbb];
            if ty == GgmlType::Q6K {
                for r in 0..ROWS {
                    let b = &data[(g * ROWS + r) * rb + i * bb..][..bb];
                    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                    o[2 * r..2 * r + 2].copy_from_slice(&b[208..210]);
                    for j in 0..16 {
                        o[32 + 16 * j + r] = sc[j];
                    }
                    for h in 0..2 {
                        for s in 0..8 {
                            let base = 288 + 192 * (8 * h + s);
                            o[base + 4 * r..][..4].copy_from_slice(&ql[64 * h + 4 * s..][..4]);
                            o[base + 64 + 4 * r..][..4]
                                .copy_from_slice(&ql[64 * h + 32 + 4 * s..][..4]);
                            o[base + 128 + 4 * r..][..4]
                                .copy_from_slice(&qh[32 * h + 4 * s..][..4]);
                        }
                    }
                }
                continue;
            }
            if matches!(ty, GgmlType::Q4K | GgmlType::Q5K) {
                // Q5_K: the fifth bits sit between the scales and qs
                let qs = if ty == GgmlType::Q5K { 48 } else { 16 };
                for r in 0..ROWS {
                    let b = &data[(g * ROWS + r) * rb + i * bb..][..bb];
                    if ty == GgmlType::Q5K {
                        for s in 0..8 {
                            o[Q4K_GROUP + 64 * s + 4 * r..][..4]
                                .copy_from_slice(&b[16 + 4 * s..][..4]);
                        }
                    }
                    o[2 * r..2 * r + 2].copy_from_slice(&b[0..2]);
                    o[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&b[2..4]);
                    let sc: &[u8; 12] = b[4..16].try_into().expect("12 bytes");
                    for j in 0..8 {
                        let (d, m) = crate::quant::kquant_scale_min(j, sc);
                        o[64 + 16 * j + r] = d;
                        o[192 + 32 * (j / 2) + 2 * r + j % 2] = m;
                    }
                    for step in 0..32 {
                        let (c, s) = (step / 8, step % 8);
                        o[320 + 64 * step + 4 * r..][..4]
                            .copy_from_slice(&b[qs + 32 * c + 4 * s..][..4]);
                    }
                }
                continue;
            }
            if ty == GgmlType::Q5_1 {
                for r in 0..ROWS {
                    let b = &data[(g * ROWS + r) * rb + i * bb..][..bb];
                    o[2 * r..2 * r + 2].copy_from_slice(&b[0..2]);
                    o[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&b[2..4]);
                    let q = &mut o[4 * ROWS..];
                    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                    pack_nibbles_and_fifth(q, r, &b[8..24], qh);
                }
                continue;
            }
            for r in 0..ROWS {
                let b = &data[(g * ROWS + r) * rb + i * bb..][..bb];
                o[2 * r..2 * r + 2].copy_from_slice(&b[..2]);
                let q = &mut o[2 * ROWS..];
                match ty {
                    GgmlType::Q4_0 => {
                        for s in 0..4 {
                            q[4 * ROWS * s + 4 * r..][..4].copy_from_slice(&b[2 + 4 * s..][..4]);
                        }
                    }
                    GgmlType::Q5_0 => {
                        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                        pack_nibbles_and_fifth(q, r, &b[6..22], qh);
                    }
                    _ => {
                        for s in 0..8 {
                            for k in 0..4 {
                                q[4 * ROWS * s + 4 * r + k] = b[2 + 4 * s + k] ^ 0x80;
                            }
                        }
                    }
                }
            }
        }
    }
    true
}

/// Where one row's block lies in a Q4_1x16 group (see the module docs):
/// its scale, its minimum, and its 32 levels at `q..q + 32` in the nibble
/// `shift` (0 low, 4 high).
struct Q41At {
    d: usize,
    m: usize,
    q: usize,
    shift: u32,
}

/// [`Q41At`] of block `i` of row `r` in a group of `nb` blocks.
fn q41_at(nb: usize, i: usize, r: usize) -> Q41At {
    let base = i / 2 * 2 * Q41_GROUP;
    let (p, side) = (r / 2, r % 2);
    if i + 1 == nb && nb % 2 == 1 {
        Q41At {
            d: base + 2 * r,
            m: base + 32 + 2 * r,
            q: base + 64 + 32 * p,
            shift: 4 * side as u32,
        }
    } else {
        let h = i % 2;
        Q41At {
            d: base + 32 * h + 2 * r,
            m: base + 64 + 32 * h + 2 * r,
            q: base + 128 + 64 * p + 32 * side,
            shift: 4 * h as u32,
        }
    }
}

/// Row `r` of a Q4_1x16 group (`nb` blocks) in canonical blocks.
fn q41_row(w: &[u8], nb: usize, r: usize) -> Vec<u8> {
    let mut row = vec![0u8; nb * 20];
    for i in 0..nb {
        let at = q41_at(nb, i, r);
        let b = &mut row[i * 20..(i + 1) * 20];
        b[0..2].copy_from_slice(&w[at.d..at.d + 2]);
        b[2..4].copy_from_slice(&w[at.m..at.m + 2]);
        for e in 0..32 {
            let q = (w[at.q + e] >> at.shift) & 0x0f;
            b[4 + e % 16] |= q << (4 * (e / 16));
        }
    }
    row
}

/// Row `r`'s nibbles (`qs`, 16 bytes) in the 4 steps of `q` and its
/// fifth bits (`qh`) in the 64 bytes after them (Q5_0x16, Q5_1x16).
fn pack_nibbles_and_fifth(q: &mut [u8], r: usize, qs: &[u8], qh: u32) {
    let bit = |e: usize| ((qh >> e) & 1) as u8;
    for s in 0..4 {
        q[4 * ROWS * s + 4 * r..][..4].copy_from_slice(&qs[4 * s..][..4]);
    }
    for k in 0..4 {
        q[16 * ROWS + 4 * r + k] = (0..4)
            .map(|s| bit(4 * s + k) << (2 * s) | bit(16 + 4 * s + k) << (2 * s + 1))
            .fold(0, |a, b| a | b);
    }
}

/// The exact sum of each Q8_0 activation block's 32 levels (the offset
/// correction the kernels subtract), `nb` values.
pub fn act_sums(x: &[u8], out: &mut [i32]) {
    for (b, o) in x.chunks_exact(34).zip(out.iter_mut()) {
        *o = b[2..].iter().map(|&q| q as i8 as i32).sum();
    }
}

/// `out[r][c]` = row r of group `w` (`nb` blocks) dot activation row
/// `x[c]` (Q8_0, with its block sums `ys[c]`), in the order above.
pub type PackedFn<const C: usize> =
    fn(GgmlType, &[u8], &[&[u8]; C], &[&[i32]; C], &mut [[f32; C]; ROWS]);

/// The scalar twin.
pub fn packed_scalar<const C: usize>(
    ty: GgmlType,
    w: &[u8],
    x: &[&[u8]; C],
    ys: &[&[i32]; C],
    out: &mut [[f32; C]; ROWS],
) {
    let gbb = group_block_bytes(ty).expect("a packed type");
    let nb = w.len() / gbb;
    if matches!(ty, GgmlType::Q4K | GgmlType::Q5K) {
        return q4k_scalar(ty == GgmlType::Q5K, w, x, out);
    }
    if ty == GgmlType::Q5_1 {
        return q51_scalar(w, x, out);
    }
    if ty == GgmlType::Q4_1 {
        // the layout's order is ggml's: the canonical scalar dot of each row
        let k = crate::kernels_for(ty).expect("Q4_1 kernels");
        for r in 0..ROWS {
            let row = q41_row(w, nb, r);
            for c in 0..C {
                out[r][c] = k.dot_at(crate::cpu::Level::Scalar, &row, x[c]);
            }
        }
        return;
    }
    if ty == GgmlType::Q6K {
        return q6k_scalar(w, x, out);
    }
    let (steps, off) = match ty {
        GgmlType::Q4_0 => (4, 8),
        GgmlType::Q5_0 => (4, 16),
        _ => (8, 128),
    };
    let mut acc = [[0.0f32; C]; ROWS];
    for i in 0..nb {
        let g = &w[i * gbb..(i + 1) * gbb];
        for c in 0..C {
            let xb = &x[c][i * 34..(i + 1) * 34];
            let xd = f16_to_f32(half::f16::from_le_bytes([xb[0], xb[1]]));
            let y = |e: usize| xb[2 + e] as i8 as i32;
            for r in 0..ROWS {
                let mut isum = 0i32;
                for s in 0..steps {
                    for k in 0..4 {
                        let u = g[2 * ROWS + 4 * ROWS * s + 4 * r + k] as i32;
                        if ty == GgmlType::Q5_0 {
                            let h = g[18 * ROWS + 4 * r + k] as i32 >> (2 * s);
                            let (lo, hi) = ((u & 0x0f) | (h & 1) << 4, (u >> 4) | (h & 2) << 3);
                            isum += lo * y(4 * s + k) + hi * y(16 + 4 * s + k);
                        } else if ty == GgmlType::Q4_0 {
                            isum += (u & 0x0f) * y(4 * s + k) + (u >> 4) * y(16 + 4 * s + k);
                        } else {
                            isum += u * y(4 * s + k);
                        }
                    }
                }
                isum -= off * ys[c][i];
                let wd = f16_to_f32(half::f16::from_le_bytes([g[2 * r], g[2 * r + 1]]));
                acc[r][c] = (wd * xd).mul_add(isum as f32, acc[r][c]);
            }
        }
    }
    *out = acc;
}

/// The packed Q5_1 scalar twin (Q8_1 activations), in the order above.
fn q51_scalar<const C: usize>(w: &[u8], x: &[&[u8]; C], out: &mut [[f32; C]; ROWS]) {
    let nb = w.len() / Q51_GROUP;
    let f16at = |b: &[u8], o: usize| f16_to_f32(half::f16::from_le_bytes([b[o], b[o + 1]]));
    let mut acc = [[0.0f32; C]; ROWS];
    let mut summ = [[0.0f32; C]; ROWS];
    for i in 0..nb {
        let g = &w[i * Q51_GROUP..(i + 1) * Q51_GROUP];
        for c in 0..C {
            let xb = &x[c][i * 36..(i + 1) * 36];
            let y = |e: usize| xb[4 + e] as i8 as i32;
            for r in 0..ROWS {
                let mut isum = 0i32;
                for s in 0..4 {
                    for k in 0..4 {
                        let u = g[4 * ROWS + 4 * ROWS * s + 4 * r + k] as i32;
                        let h = g[20 * ROWS + 4 * r + k] as i32 >> (2 * s);
                        let (lo, hi) = ((u & 0x0f) | (h & 1) << 4, (u >> 4) | (h & 2) << 3);
                        isum += lo * y(4 * s + k) + hi * y(16 + 4 * s + k);
                    }
                }
                acc[r][c] = (f16at(g, 2 * r) * f16at(xb, 0)).mul_add(isum as f32, acc[r][c]);
                summ[r][c] = f16at(g, 32 + 2 * r).mul_add(f16at(xb, 2), summ[r][c]);
            }
        }
    }
    for r in 0..ROWS {
        for c in 0..C {
            out[r][c] = acc[r][c] + summ[r][c];
        }
    }
}

/// The packed Q4_K (and, with `q5`, Q5_K) scalar twin: the canonical dot's
/// integers and f32 expression, read from the repacked layout.
fn q4k_scalar<const C: usize>(q5: bool, w: &[u8], x: &[&[u8]; C], out: &mut [[f32; C]; ROWS]) {
    let gb = if q5 { Q5K_GROUP } else { Q4K_GROUP };
    let nb = w.len() / gb;
    let f16at = |b: &[u8], o: usize| f16_to_f32(half::f16::from_le_bytes([b[o], b[o + 1]]));
    let mut acc = [[0.0f32; C]; ROWS];
    for i in 0..nb {
        let g = &w[i * gb..(i + 1) * gb];
        for c in 0..C {
            let xb = &x[c][i * 292..(i + 1) * 292];
            let yd = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
            let y = |e: usize| xb[4 + e] as i8 as i32;
            let bs = |k: usize| i16::from_le_bytes([xb[260 + 2 * k], xb[261 + 2 * k]]) as i32;
            for r in 0..ROWS {
                let (mut sumi, mut summ) = (0i32, 0i32);
                for j in 0..8 {
                    let (c2, hi) = (j / 2, j % 2);
                    let mut isum = 0i32;
                    for s in 0..8 {
                        for k in 0..4 {
                            let u = g[320 + 64 * (8 * c2 + s) + 4 * r + k] as i32;
                            let mut q = if hi == 1 { u >> 4 } else { u & 15 };
                            if q5 {
                                let h = g[Q4K_GROUP + 64 * s + 4 * r + k] as i32;
                                q |= ((h >> (2 * c2 + hi)) & 1) << 4;
                            }
                            isum += q * y(64 * c2 + 32 * hi + 4 * s + k);
                        }
                    }
                    sumi += g[64 + 16 * j + r] as i32 * isum;
                    summ +=
                        g[192 + 32 * (j / 2) + 2 * r + j % 2] as i32 * (bs(2 * j) + bs(2 * j + 1));
                }
                let (d, dmin) = (f16at(g, 2 * r), f16at(g, 32 + 2 * r));
                acc[r][c] += yd * (d * sumi as f32 - dmin * summ as f32);
            }
        }
    }
    *out = acc;
}

/// The packed Q6_K scalar twin (the canonical Q6_K dot's integers and f32
/// expression, from the repacked layout).
fn q6k_scalar<const C: usize>(w: &[u8], x: &[&[u8]; C], out: &mut [[f32; C]; ROWS]) {
    let nb = w.len() / Q6K_GROUP;
    let mut acc = [[0.0f32; C]; ROWS];
    for i in 0..nb {
        let g = &w[i * Q6K_GROUP..(i + 1) * Q6K_GROUP];
        for c in 0..C {
            let xb = &x[c][i * 292..(i + 1) * 292];
            let yd = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
            let y = |e: usize| xb[4 + e] as i8 as i32;
            for r in 0..ROWS {
                let mut s16 = [0i32; 16];
                for h in 0..2 {
                    for s in 0..8 {
                        let base = 288 + 192 * (8 * h + s);
                        for k in 0..4 {
                            let (a, b, hb) = (
                                g[base + 4 * r + k] as i32,
                                g[base + 64 + 4 * r + k] as i32,
                                g[base + 128 + 4 * r + k] as i32,
                            );
                            let l = 4 * s + k;
                            let q = [
                                (a & 15) | ((hb & 3) << 4),
                                (b & 15) | (((hb >> 2) & 3) << 4),
                                (a >> 4) | (((hb >> 4) & 3) << 4),
                                (b >> 4) | (((hb >> 6) & 3) << 4),
                            ];
                            for (t, &qt) in q.iter().enumerate() {
                                let e = 128 * h + 32 * t + l;
                                s16[e / 16] += (qt - 32) * y(e);
                            }
                        }
                    }
                }
                let mut sumi = 0i32;
                for j in 0..16 {
                    sumi += g[32 + 16 * j + r] as i8 as i32 * s16[j];
                }
                let d = f16_to_f32(half::f16::from_le_bytes([g[2 * r], g[2 * r + 1]]));
                acc[r][c] += d * yd * sumi as f32;
            }
        }
    }
    *out = acc;
}

/// The fastest packed kernels at `level`: 16 rows x 1 column and 16 x 4.
pub fn kernels(level: crate::cpu::Level) -> (PackedFn<1>, PackedFn<4>) {
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx512 {
        return (x86::packed::<1>, x86::packed::<4>);
    }
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx2 {
        return (avx2::packed::<1>, avx2::packed::<4>);
    }
    let _ = level;
    (packed_scalar::<1>, packed_scalar::<4>)
}

/// Whether [`kernels`] at `level` has SIMD kernels for `ty` (else they are
/// the scalar twin's, and repacking that type cannot pay there).
pub fn has_kernels(level: crate::cpu::Level, ty: GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if level >= crate::cpu::Level::Avx512 {
            return group_block_bytes(ty).is_some();
        }
        if level >= crate::cpu::Level::Avx2 {
            return avx2::has(ty);
        }
    }
    let _ = (level, ty);
    false
}

/// Whether [`packed_groups`] has a kernel for `ty` at `level`.
pub fn groups_supported(level: crate::cpu::Level, ty: GgmlType) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    if level >= crate::cpu::Level::Avx512 {
        return matches!(
            ty,
            GgmlType::Q4_0
                | GgmlType::Q5_0
                | GgmlType::Q8_0
                | GgmlType::Q4K
                | GgmlType::Q5K
                | GgmlType::Q6K
        );
    }
    // AVX2 Q4_1 and Q5_1 need their registers for one group: no lockstep
    level >= crate::cpu::Level::Avx2
        && has_kernels(crate::cpu::Level::Avx2, ty)
        && !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1)
}

/// Groups ahead that the AVX2 one-column (decode) Q4_0 and Q4_1 kernels
/// prefetch by default (non-temporal). On an AMD Zen 3 (AVX2 only, 2
/// threads, runs alternated in pairs, median of the pairs' ratios) it took
/// 1.1B Q4_0 decode 1.11x, 110M Q4_0 1.07x and SmolLM2 Q4_1 1.11x, and
/// earlier AVX2 machines gained too (1.1B Q4_0 decode 25 -> 31 t/s); the
/// same 4 groups ahead cost the Q8_0 and k-quant kernels speed there
/// (1.1B Q8_0 0.94x, 1.1B Q4_K_M 0.82x, 110M Q4_K_M 0.84x: their groups
/// are 2 to 12 times larger), so they prefetch none, nor the untried
/// Q5_0 and Q5_1.
pub const AVX2_PREFETCH_AHEAD: usize = 4;

/// Groups ahead that the one-column (decode) kernels prefetch by software:
/// `SUBLLM_PREFETCH=N` (0 to 64, read once) for every level, else
/// `default`, the kernel's own ([`AVX2_PREFETCH_AHEAD`] for AVX2 Q4_0 and
/// Q4_1, none for the others and at AVX-512). A whole matrix streams through one thread in order
/// (tasks are contiguous runs of groups), which the hardware prefetchers
/// of an AMD Zen 4 follow by themselves: there 8 ahead cost 110M Q4_K_M
/// decode half its speed (110 against 268 t/s at one thread) and 1.1B
/// Q4_0 a fifth, so the AVX-512 kernels ask for none.
pub fn prefetch_blocks(default: usize) -> usize {
    static AHEAD: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    AHEAD
        .get_or_init(|| {
            std::env::var("SUBLLM_PREFETCH")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n <= 64)
        })
        .unwrap_or(default)
}

/// Decode's matrix-vector product over `G` row groups read in lockstep
/// (`G` memory streams per thread, which kept more misses in flight than
/// one on an earlier machine: one stream per core read about 20 GB/s, four
/// about 31; on an AMD Zen 4 one sequential stream is faster, see the
/// backend's `SUBLLM_DECODE_STREAMS`): `out[k][r]` = row r of group `w[k]` dot `x` (Q8_0, block
/// sums `ys`). The same order as [`kernels`]' one-column kernel, group by
/// group, bit for bit. False (and nothing written) where
/// [`groups_supported`] says no.
pub fn packed_groups<const G: usize>(
    level: crate::cpu::Level,
    ty: GgmlType,
    w: [&[u8]; G],
    x: &[u8],
    ys: &[i32],
    out: &mut [[f32; ROWS]; G],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if groups_supported(level, ty) {
        let gbb = group_block_bytes(ty).expect("a packed type");
        let nb = w[0].len() / gbb;
        let kq = matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K);
        let ok = w.iter().all(|g| g.len() == nb * gbb)
            && x.len() >= nb * if kq { 292 } else { 34 }
            && (kq || ys.len() >= nb);
        assert!(ok, "row sizes");
        let mut o = [[[0.0f32; 1]; ROWS]; G];
        assert!(level <= crate::cpu::detected());
        // SAFETY: the level is detected on this CPU (asserted): AVX-512
        // with VNNI, or AVX2 with FMA and F16C and a type `avx2` takes
        // (`groups_supported`); the assert proves every block read is in
        // bounds (all loads unaligned).
        unsafe {
            let wp = w.map(<[u8]>::as_ptr);
            if level >= crate::cpu::Level::Avx512 {
                x86::groups::<G>(ty, nb, wp, x.as_ptr(), ys, &mut o);
            } else {
                avx2::groups::<G>(ty, nb, wp, x.as_ptr(), ys, &mut o);
            }
        }
        for (dst, src) in out.iter_mut().zip(&o) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s[0];
            }
        }
        return true;
    }
    let _ = (level, ty, w, x, ys, out);
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    pub(super) fn packed<const C: usize>(
        ty: GgmlType,
        w: &[u8],
        x: &[&[u8]; C],
        ys: &[&[i32]; C],
        out: &mut [[f32; C]; ROWS],
    ) {
        let gbb = group_block_bytes(ty).expect("a packed type");
        let nb = w.len() / gbb;
        let kq = matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K);
        let q51 = matches!(ty, GgmlType::Q5_1 | GgmlType::Q4_1);
        let xb = if kq {
            292
        } else if q51 {
            36
        } else {
            34
        };
        let ok = w.len() == nb * gbb
            && x.iter().all(|r| r.len() >= nb * xb)
            && (kq || q51 || ys.iter().all(|s| s.len() >= nb));
        assert!(ok, "row sizes");
        // SAFETY: only handed out by `kernels` at the AVX-512 level, which
        // `cpu::level()` detected; the assert proves every block the kernel
        // reads is in bounds (all loads unaligned).
        unsafe {
            let one = std::array::from_mut(out);
            let w1 = [w.as_ptr()];
            match ty {
                GgmlType::Q4_0 => q4_0::<C, 1, false>(nb, w1, &x.map(<[u8]>::as_ptr), ys, one),
                GgmlType::Q5_0 => q4_0::<C, 1, true>(nb, w1, &x.map(<[u8]>::as_ptr), ys, one),
                GgmlType::Q8_0 => q8_0::<C, 1>(nb, w1, &x.map(<[u8]>::as_ptr), ys, one),
                GgmlType::Q5_1 => q5_1(nb, w.as_ptr(), &x.map(<[u8]>::as_ptr), out),
                GgmlType::Q4_1 if C == 1 => {
                    q4_1::<C, 8>(nb, w.as_ptr(), &x.map(<[u8]>::as_ptr), out, 0)
                }
                GgmlType::Q4_1 => {
                    // two passes over half the pairs each, so the
                    // accumulators (4 pairs x C columns) stay in registers
                    q4_1::<C, 4>(nb, w.as_ptr(), &x.map(<[u8]>::as_ptr), out, 0);
                    q4_1::<C, 4>(nb, w.as_ptr(), &x.map(<[u8]>::as_ptr), out, 4)
                }
                GgmlType::Q4K => q4_k::<C, 1, false>(nb, w1, &x.map(<[u8]>::as_ptr), one),
                GgmlType::Q5K => q4_k::<C, 1, true>(nb, w1, &x.map(<[u8]>::as_ptr), one),
                _ => q6_k::<C, 1>(nb, w1, &x.map(<[u8]>::as_ptr), one),
            }
        }
    }

    /// [`super::packed_groups`]: one column over `G` groups in lockstep.
    ///
    /// # Safety
    /// The CPU has AVX-512 (with VNNI); every group holds `nb` blocks of
    /// `ty` and `x` (with `ys`) `nb` blocks of its dot type.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn groups<const G: usize>(
        ty: GgmlType,
        nb: usize,
        w: [*const u8; G],
        x: *const u8,
        ys: &[i32],
        out: &mut [[[f32; 1]; ROWS]; G],
    ) {
        let x = [x];
        match ty {
            GgmlType::Q4_0 => q4_0::<1, G, false>(nb, w, &x, &[ys], out),
            GgmlType::Q5_0 => q4_0::<1, G, true>(nb, w, &x, &[ys], out),
            GgmlType::Q8_0 => q8_0::<1, G>(nb, w, &x, &[ys], out),
            GgmlType::Q4K => q4_k::<1, G, false>(nb, w, &x, out),
            GgmlType::Q5K => q4_k::<1, G, true>(nb, w, &x, out),
            _ => q6_k::<1, G>(nb, w, &x, out),
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn bcast(p: *const u8) -> __m512i {
        _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
    }

    /// Prefetches the block group `ahead` groups after the one at `g` (`gb`
    /// bytes each; see [`super::prefetch_blocks`]). Past the end of this row
    /// group it reaches into the next one; the address is only a hint
    /// (computed with `wrapping_add`, never dereferenced, and a prefetch
    /// never faults).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn prefetch_ahead(g: *const u8, gb: usize, ahead: usize) {
        let p = g.wrapping_add(ahead.wrapping_mul(gb));
        for l in (0..gb).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(l).cast());
        }
    }

    /// Bit `k` of every byte of `h` moved to bit 4 (other bits garbage,
    /// masked by the caller).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn bit_to_4(h: __m512i, k: usize) -> __m512i {
        match k {
            0 => _mm512_slli_epi16(h, 4),
            1 => _mm512_slli_epi16(h, 3),
            2 => _mm512_slli_epi16(h, 2),
            3 => _mm512_slli_epi16(h, 1),
            4 => h,
            5 => _mm512_srli_epi16(h, 1),
            6 => _mm512_srli_epi16(h, 2),
            _ => _mm512_srli_epi16(h, 3),
        }
    }

    /// `lo | (hs & 0x10)`: a nibble and its fifth bit, in one instruction.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn with_fifth(lo: __m512i, hs: __m512i) -> __m512i {
        _mm512_ternarylogic_epi32::<0xf8>(lo, hs, _mm512_set1_epi8(0x10))
    }

    /// The f16 at `p` as f32, in all sixteen lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn bcast_f16(p: *const u8) -> __m512 {
        let h = _mm_set1_epi16(p.cast::<i16>().read_unaligned());
        _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(h)))
    }

    /// One Q8_0 activation block's contribution to 16 rows: the exact
    /// integer dots `isum` less the offset correction `corr`, times
    /// `d_w * d_x`, fused into `acc`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn block_fma(
        acc: __m512,
        isum: __m512i,
        wd: __m512,
        xb: *const u8,
        corr: i32,
    ) -> __m512 {
        let is = _mm512_sub_epi32(isum, _mm512_set1_epi32(corr));
        let scale = _mm512_mul_ps(wd, bcast_f16(xb));
        _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(is), acc)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn finish<const C: usize>(acc: &[__m512; C], out: &mut [[f32; C]; ROWS]) {
        for c in 0..C {
            let mut v = [0.0f32; 16];
            _mm512_storeu_ps(v.as_mut_ptr(), acc[c]);
            for r in 0..ROWS {
                out[r][c] = v[r];
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q4_0<const C: usize, const G: usize, const Q5: bool>(
        nb: usize,
        w: [*const u8; G],
        x: &[*const u8; C],
        ys: &[&[i32]; C],
        out: &mut [[[f32; C]; ROWS]; G],
    ) {
        let pf = super::prefetch_blocks(0);
        let m4 = _mm512_set1_epi8(0x0f);
        let (gb, off) = if Q5 { (Q50_GROUP, 16) } else { (18 * ROWS, 8) };
        let mut acc = [[_mm512_setzero_ps(); C]; G];
        for i in 0..nb {
            for k in 0..G {
                let g = w[k].add(i * gb);
                if C == 1 && pf > 0 {
                    prefetch_ahead(g, gb, pf);
                }
                let wd = _mm512_cvtph_ps(_mm256_loadu_si256(g.cast()));
                let mut isum = [_mm512_setzero_si512(); C];
                let h = if Q5 {
                    _mm512_loadu_si512(g.add(18 * ROWS).cast())
                } else {
                    _mm512_setzero_si512()
                };
                for s in 0..4 {
                    let v = _mm512_loadu_si512(g.add(2 * ROWS + 4 * ROWS * s).cast());
                    let mut lo = _mm512_and_si512(v, m4);
                    let mut hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                    if Q5 {
                        lo = with_fifth(lo, bit_to_4(h, 2 * s));
                        hi = with_fifth(hi, bit_to_4(h, 2 * s + 1));
                    }
                    for c in 0..C {
                        let y = x[c].add(i * 34 + 2);
                        isum[c] = _mm512_dpbusd_epi32(isum[c], lo, bcast(y.add(4 * s)));
                        isum[c] = _mm512_dpbusd_epi32(isum[c], hi, bcast(y.add(16 + 4 * s)));
                    }
                }
                for c in 0..C {
                    acc[k][c] = block_fma(
                        acc[k][c],
                        isum[c],
                        wd,
                        x[c].add(i * 34),
                        off * *ys[c].get_unchecked(i),
                    );
                }
            }
        }
        for k in 0..G {
            finish(&acc[k], &mut out[k]);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q5_1<const C: usize>(
        nb: usize,
        w: *const u8,
        x: &[*const u8; C],
        out: &mut [[f32; C]; ROWS],
    ) {
        let pf = super::prefetch_blocks(0);
        let m4 = _mm512_set1_epi8(0x0f);
        let mut acc = [_mm512_setzero_ps(); C];
        let mut summ = [_mm512_setzero_ps(); C];
        for i in 0..nb {
            let g = w.add(i * Q51_GROUP);
            if C == 1 && pf > 0 {
                prefetch_ahead(g, Q51_GROUP, pf);
            }
            let wd = _mm512_cvtph_ps(_mm256_loadu_si256(g.cast()));
            let wm = _mm512_cvtph_ps(_mm256_loadu_si256(g.add(32).cast()));
            let h = _mm512_loadu_si512(g.add(20 * ROWS).cast());
            let mut isum = [_mm512_setzero_si512(); C];
            for s in 0..4 {
                let v = _mm512_loadu_si512(g.add(4 * ROWS + 4 * ROWS * s).cast());
                let lo = with_fifth(_mm512_and_si512(v, m4), bit_to_4(h, 2 * s));
                let hi = with_fifth(
                    _mm512_and_si512(_mm512_srli_epi16(v, 4), m4),
                    bit_to_4(h, 2 * s + 1),
                );
                for c in 0..C {
                    let y = x[c].add(i * 36 + 4);
                    isum[c] = _mm512_dpbusd_epi32(isum[c], lo, bcast(y.add(4 * s)));
                    isum[c] = _mm512_dpbusd_epi32(isum[c], hi, bcast(y.add(16 + 4 * s)));
                }
            }
            for c in 0..C {
                let xb = x[c].add(i * 36);
                let scale = _mm512_mul_ps(wd, bcast_f16(xb));
                acc[c] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum[c]), acc[c]);
                summ[c] = _mm512_fmadd_ps(wm, bcast_f16(xb.add(2)), summ[c]);
            }
        }
        for c in 0..C {
            acc[c] = _mm512_add_ps(acc[c], summ[c]);
        }
        finish(&acc, out);
    }

    /// Packed Q4_1 (ggml's order, see the module docs) for the `NP` row
    /// pairs from `p0`: each pair's two rows in the halves of one
    /// accumulator, eight lanes each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
    unsafe fn q4_1<const C: usize, const NP: usize>(
        nb: usize,
        w: *const u8,
        x: &[*const u8; C],
        out: &mut [[f32; C]; ROWS],
        p0: usize,
    ) {
        let pf = super::prefetch_blocks(0);
        let m4 = _mm512_set1_epi8(0x0f);
        // per pair p: [row 2p x 8, row 2p + 1 x 8] of a 16-row vector
        let idx: [__m512i; NP] = std::array::from_fn(|p| {
            let (a, b) = (2 * (p0 + p) as i32, 2 * (p0 + p) as i32 + 1);
            _mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a)
        });
        let mut acc = [[_mm512_setzero_ps(); C]; NP];
        let mut summ = [_mm512_setzero_ps(); C];
        let mut i = 0;
        while i + 2 <= nb {
            let g = w.add(i / 2 * 2 * Q41_GROUP);
            if C == 1 && pf > 0 {
                prefetch_ahead(g, 2 * Q41_GROUP, pf);
            }
            let cvt = |o: usize| _mm512_cvtph_ps(_mm256_loadu_si256(g.add(o).cast()));
            let v: [__m512i; NP] =
                std::array::from_fn(|p| _mm512_loadu_si512(g.add(128 + 64 * (p0 + p)).cast()));
            let lo = v.map(|v| _mm512_and_si512(v, m4));
            let hi = v.map(|v| _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
            q4_1_block(
                cvt(0),
                cvt(64),
                x.map(|r| r.add(i * 36)),
                &lo,
                &idx,
                &mut acc,
                &mut summ,
            );
            q4_1_block(
                cvt(32),
                cvt(96),
                x.map(|r| r.add((i + 1) * 36)),
                &hi,
                &idx,
                &mut acc,
                &mut summ,
            );
            i += 2;
        }
        if i < nb {
            let g = w.add(i / 2 * 2 * Q41_GROUP);
            let cvt = |o: usize| _mm512_cvtph_ps(_mm256_loadu_si256(g.add(o).cast()));
            let m = _mm256_set1_epi8(0x0f);
            let q: [__m512i; NP] = std::array::from_fn(|p| {
                let v = _mm256_loadu_si256(g.add(64 + 32 * (p0 + p)).cast());
                let (a, b) = (
                    _mm256_and_si256(v, m),
                    _mm256_and_si256(_mm256_srli_epi16(v, 4), m),
                );
                _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1)
            });
            q4_1_block(
                cvt(0),
                cvt(32),
                x.map(|r| r.add(i * 36)),
                &q,
                &idx,
                &mut acc,
                &mut summ,
            );
        }
        for c in 0..C {
            let mut sm = [0.0f32; 16];
            _mm512_storeu_ps(sm.as_mut_ptr(), summ[c]);
            for p in 0..NP {
                let (a, b) = crate::x86_512::hsum_halves(acc[p][c]);
                let r = 2 * (p0 + p);
                out[r][c] = a + sm[r];
                out[r + 1][c] = b + sm[r + 1];
            }
        }
    }

    /// One Q4_1 block of the pairs `q` (levels, each pair's two rows in
    /// halves) against the Q8_1 blocks `xb`: the 16 rows' scales `wd` and
    /// minimums `wm`, permuted per pair by `idx`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
    unsafe fn q4_1_block<const C: usize, const NP: usize>(
        wd: __m512,
        wm: __m512,
        xb: [*const u8; C],
        q: &[__m512i; NP],
        idx: &[__m512i; NP],
        acc: &mut [[__m512; C]; NP],
        summ: &mut [__m512; C],
    ) {
        for c in 0..C {
            let scale = _mm512_mul_ps(wd, bcast_f16(xb[c]));
            summ[c] = _mm512_fmadd_ps(wm, bcast_f16(xb[c].add(2)), summ[c]);
            let y = _mm512_broadcast_i64x4(_mm256_loadu_si256(xb[c].add(4).cast()));
            for p in 0..NP {
                let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[p], y);
                let sc = _mm512_permutexvar_ps(idx[p], scale);
                acc[p][c] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), acc[p][c]);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q8_0<const C: usize, const G: usize>(
        nb: usize,
        w: [*const u8; G],
        x: &[*const u8; C],
        ys: &[&[i32]; C],
        out: &mut [[[f32; C]; ROWS]; G],
    ) {
        let pf = super::prefetch_blocks(0);
        let mut acc = [[_mm512_setzero_ps(); C]; G];
        for i in 0..nb {
            for k in 0..G {
                let g = w[k].add(i * 34 * ROWS);
                if C == 1 && pf > 0 {
                    prefetch_ahead(g, 34 * ROWS, pf);
                }
                let wd = _mm512_cvtph_ps(_mm256_loadu_si256(g.cast()));
                let mut isum = [_mm512_setzero_si512(); C];
                for s in 0..8 {
                    let v = _mm512_loadu_si512(g.add(2 * ROWS + 4 * ROWS * s).cast());
                    for c in 0..C {
                        let y = x[c].add(i * 34 + 2);
                        isum[c] = _mm512_dpbusd_epi32(isum[c], v, bcast(y.add(4 * s)));
                    }
                }
                for c in 0..C {
                    acc[k][c] = block_fma(
                        acc[k][c],
                        isum[c],
                        wd,
                        x[c].add(i * 34),
                        128 * *ys[c].get_unchecked(i),
                    );
                }
            }
        }
        for k in 0..G {
            finish(&acc[k], &mut out[k]);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q4_k<const C: usize, const G: usize, const Q5: bool>(
        nb: usize,
        w: [*const u8; G],
        x: &[*const u8; C],
        out: &mut [[[f32; C]; ROWS]; G],
    ) {
        let pf = super::prefetch_blocks(0);
        let m4 = _mm512_set1_epi8(0x0f);
        let gb = if Q5 { Q5K_GROUP } else { Q4K_GROUP };
        let mut acc = [[_mm512_setzero_ps(); C]; G];
        for i in 0..nb {
            for k in 0..G {
                let g = w[k].add(i * gb);
                if C == 1 && pf > 0 {
                    prefetch_ahead(g, gb, pf);
                }
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(g.cast()));
                let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(g.add(32).cast()));
                let mut sumi = [_mm512_setzero_si512(); C];
                for c2 in 0..4 {
                    let mut lo_s = [_mm512_setzero_si512(); C];
                    let mut hi_s = [_mm512_setzero_si512(); C];
                    for s in 0..8 {
                        let v = _mm512_loadu_si512(g.add(320 + 64 * (8 * c2 + s)).cast());
                        let mut lo = _mm512_and_si512(v, m4);
                        let mut hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                        if Q5 {
                            let h = _mm512_loadu_si512(g.add(Q4K_GROUP + 64 * s).cast());
                            lo = with_fifth(lo, bit_to_4(h, 2 * c2));
                            hi = with_fifth(hi, bit_to_4(h, 2 * c2 + 1));
                        }
                        for c in 0..C {
                            let y = x[c].add(i * 292 + 4 + 64 * c2 + 4 * s);
                            lo_s[c] = _mm512_dpbusd_epi32(lo_s[c], lo, bcast(y));
                            hi_s[c] = _mm512_dpbusd_epi32(hi_s[c], hi, bcast(y.add(32)));
                        }
                    }
                    let sc_lo =
                        _mm512_cvtepu8_epi32(_mm_loadu_si128(g.add(64 + 16 * (2 * c2)).cast()));
                    let sc_hi =
                        _mm512_cvtepu8_epi32(_mm_loadu_si128(g.add(64 + 16 * (2 * c2 + 1)).cast()));
                    for c in 0..C {
                        sumi[c] = _mm512_add_epi32(
                            sumi[c],
                            _mm512_add_epi32(
                                _mm512_mullo_epi32(lo_s[c], sc_lo),
                                _mm512_mullo_epi32(hi_s[c], sc_hi),
                            ),
                        );
                    }
                }
                // the minimums' term: per pair of sub-blocks one `vpdpwssd` of
                // the (min, min) i16 pairs of the 16 rows with the pair of
                // activation sub-block sums (exact: each below 2^13)
                let mnp: [__m512i; 4] = std::array::from_fn(|p| {
                    _mm512_cvtepu8_epi16(_mm256_loadu_si256(g.add(192 + 32 * p).cast()))
                });
                for c in 0..C {
                    let xb = x[c].add(i * 292);
                    let bs = _mm256_loadu_si256(xb.add(260).cast());
                    let b = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
                    // i32 words 0, 1, 4, 5: the i16 pairs (b0, b1), (b2, b3), (b4, b5), (b6, b7)
                    let bp = _mm512_castsi256_si512(_mm256_packs_epi32(b, b));
                    let mut summ = _mm512_setzero_si512();
                    for (p, idx) in [0, 1, 4, 5].into_iter().enumerate() {
                        let pair = _mm512_permutexvar_epi32(_mm512_set1_epi32(idx), bp);
                        summ = _mm512_dpwssd_epi32(summ, mnp[p], pair);
                    }
                    let yd = _mm512_set1_ps(xb.cast::<f32>().read_unaligned());
                    let t = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi[c]));
                    let u = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(summ));
                    acc[k][c] = _mm512_add_ps(acc[k][c], _mm512_mul_ps(yd, _mm512_sub_ps(t, u)));
                }
            }
        }
        for k in 0..G {
            finish(&acc[k], &mut out[k]);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q6_k<const C: usize, const G: usize>(
        nb: usize,
        w: [*const u8; G],
        x: &[*const u8; C],
        out: &mut [[[f32; C]; ROWS]; G],
    ) {
        let pf = super::prefetch_blocks(0);
        let (m4, m3) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(3));
        let mut acc = [[_mm512_setzero_ps(); C]; G];
        for i in 0..nb {
            for k in 0..G {
                let g = w[k].add(i * Q6K_GROUP);
                if C == 1 && pf > 0 {
                    prefetch_ahead(g, Q6K_GROUP, pf);
                }
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(g.cast()));
                let mut sumi = [_mm512_setzero_si512(); C];
                for h in 0..2 {
                    for quarter in 0..2 {
                        // steps 4*quarter.. feed sub-blocks 8h + 2t + quarter
                        let mut part = [[_mm512_setzero_si512(); 4]; C];
                        for s in 4 * quarter..4 * quarter + 4 {
                            let base = g.add(288 + 192 * (8 * h + s));
                            let a = _mm512_loadu_si512(base.cast());
                            let b = _mm512_loadu_si512(base.add(64).cast());
                            let hb = _mm512_loadu_si512(base.add(128).cast());
                            let hi = |sh: u32| -> __m512i {
                                let v = match sh {
                                    0 => hb,
                                    2 => _mm512_srli_epi16(hb, 2),
                                    4 => _mm512_srli_epi16(hb, 4),
                                    _ => _mm512_srli_epi16(hb, 6),
                                };
                                _mm512_slli_epi16(_mm512_and_si512(v, m3), 4)
                            };
                            let q = [
                                _mm512_or_si512(_mm512_and_si512(a, m4), hi(0)),
                                _mm512_or_si512(_mm512_and_si512(b, m4), hi(2)),
                                _mm512_or_si512(
                                    _mm512_and_si512(_mm512_srli_epi16(a, 4), m4),
                                    hi(4),
                                ),
                                _mm512_or_si512(
                                    _mm512_and_si512(_mm512_srli_epi16(b, 4), m4),
                                    hi(6),
                                ),
                            ];
                            for c in 0..C {
                                let y = x[c].add(i * 292 + 4 + 128 * h + 4 * s);
                                for t in 0..4 {
                                    part[c][t] =
                                        _mm512_dpbusd_epi32(part[c][t], q[t], bcast(y.add(32 * t)));
                                }
                            }
                        }
                        for t in 0..4 {
                            let j = 8 * h + 2 * t + quarter;
                            let sc =
                                _mm512_cvtepi8_epi32(_mm_loadu_si128(g.add(32 + 16 * j).cast()));
                            for c in 0..C {
                                let bs = x[c]
                                    .add(i * 292 + 260)
                                    .cast::<i16>()
                                    .add(j)
                                    .read_unaligned()
                                    as i32;
                                let isum = _mm512_sub_epi32(part[c][t], _mm512_set1_epi32(32 * bs));
                                sumi[c] = _mm512_add_epi32(sumi[c], _mm512_mullo_epi32(isum, sc));
                            }
                        }
                    }
                }
                for c in 0..C {
                    let yd = _mm512_set1_ps(x[c].add(i * 292).cast::<f32>().read_unaligned());
                    let p = _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(sumi[c]));
                    acc[k][c] = _mm512_add_ps(acc[k][c], p);
                }
            }
        }
        for k in 0..G {
            finish(&acc[k], &mut out[k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels_for;

    fn lcg(s: &mut u64) -> f32 {
        *s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        ((*s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0
    }

    /// `ROWS` random rows of `n` values quantized to `ty` (canonical bytes,
    /// row-major), their repacked form, and four random activation rows
    /// quantized to `ty`'s dot type.
    fn fixture(ty: GgmlType, n: usize, s: &mut u64) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
        let k = kernels_for(ty).unwrap();
        let act = kernels_for(k.vec_dot_type).unwrap();
        let rb = ty.row_bytes(n as u64).unwrap() as usize;
        let w: Vec<f32> = (0..ROWS * n).map(|_| lcg(s)).collect();
        let mut wq = vec![0u8; ROWS * rb];
        for r in 0..ROWS {
            k.quantize(&w[r * n..(r + 1) * n], &mut wq[r * rb..(r + 1) * rb])
                .unwrap();
        }
        let packed = repack(ty, &wq, n, ROWS).unwrap();
        let xb = act.ty.row_bytes(n as u64).unwrap() as usize;
        let xs = (0..4)
            .map(|_| {
                let v: Vec<f32> = (0..n).map(|_| lcg(s)).collect();
                let mut q = vec![0u8; xb];
                act.quantize_act(&v, &mut q).unwrap();
                q
            })
            .collect();
        (wq, packed, xs)
    }

    /// The packed scalar twin computes, from the repacked bytes, exactly the
    /// documented order applied to the canonical blocks; every SIMD level
    /// equals it bit for bit, for 1 and 4 columns.
    #[test]
    fn packed_kernels_follow_the_documented_order_bitwise() {
        let mut s = 3u64;
        for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
            let k = kernels_for(ty).unwrap();
            for nb in [1usize, 2, 7] {
                let n = nb * 32;
                let rb = nb * ty.block_bytes();
                let (wq, packed, xs) = fixture(ty, n, &mut s);
                let sums: Vec<Vec<i32>> = xs
                    .iter()
                    .map(|x| {
                        let mut o = vec![0; nb];
                        act_sums(x, &mut o);
                        o
                    })
                    .collect();
                // the definition, on the canonical blocks
                let mut want = [[0.0f32; 4]; ROWS];
                let mut deq = vec![0.0f32; n];
                for r in 0..ROWS {
                    for c in 0..4 {
                        let mut acc = 0.0f32;
                        for i in 0..nb {
                            let wb = &wq[r * rb + i * ty.block_bytes()..][..ty.block_bytes()];
                            let xb = &xs[c][i * 34..(i + 1) * 34];
                            let d = |b: &[u8]| f16_to_f32(half::f16::from_le_bytes([b[0], b[1]]));
                            k.dequantize(wb, &mut deq[..32]).unwrap();
                            let mut isum = 0i32;
                            for e in 0..32 {
                                // the integer level: value / scale, exact
                                let q = if ty == GgmlType::Q4_0 {
                                    let byte = wb[2 + e % 16];
                                    (if e < 16 { byte & 15 } else { byte >> 4 }) as i32 - 8
                                } else if ty == GgmlType::Q5_0 {
                                    let byte = wb[6 + e % 16];
                                    let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
                                    let nib = if e < 16 { byte & 15 } else { byte >> 4 };
                                    (nib as i32 | (((qh >> e) & 1) as i32 * 16)) - 16
                                } else {
                                    wb[2 + e] as i8 as i32
                                };
                                isum += q * xb[2 + e] as i8 as i32;
                            }
                            acc = (d(wb) * d(xb)).mul_add(isum as f32, acc);
                        }
                        want[r][c] = acc;
                    }
                }
                let mut got = [[0.0f32; 4]; ROWS];
                packed_scalar::<4>(
                    ty,
                    &packed,
                    &[&xs[0], &xs[1], &xs[2], &xs[3]],
                    &[&sums[0], &sums[1], &sums[2], &sums[3]],
                    &mut got,
                );
                assert_eq!(
                    got.map(|r| r.map(f32::to_bits)),
                    want.map(|r| r.map(f32::to_bits)),
                    "{ty} nb={nb}"
                );
                for level in crate::cpu::available() {
                    let (k1, k4) = kernels(level);
                    let mut g4 = [[0.0f32; 4]; ROWS];
                    k4(
                        ty,
                        &packed,
                        &[&xs[0], &xs[1], &xs[2], &xs[3]],
                        &[&sums[0], &sums[1], &sums[2], &sums[3]],
                        &mut g4,
                    );
                    assert_eq!(
                        g4.map(|r| r.map(f32::to_bits)),
                        want.map(|r| r.map(f32::to_bits)),
                        "{ty} {level:?} x4"
                    );
                    let mut g1 = [[0.0f32; 1]; ROWS];
                    k1(ty, &packed, &[&xs[2]], &[&sums[2]], &mut g1);
                    for r in 0..ROWS {
                        assert_eq!(
                            g1[r][0].to_bits(),
                            want[r][2].to_bits(),
                            "{ty} {level:?} x1 row {r}"
                        );
                    }
                }
            }
        }
    }

    /// Packed Q5_1 (Q8_1 activations) follows its documented order bit for
    /// bit at every level, from the canonical blocks.
    #[test]
    fn packed_q5_1_follows_the_documented_order_bitwise() {
        let mut s = 29u64;
        for (ty, nb) in [1usize, 2, 7].map(|nb| (GgmlType::Q5_1, nb)) {
            let k = kernels_for(ty).unwrap();
            let f16at = |b: &[u8], o: usize| f16_to_f32(half::f16::from_le_bytes([b[o], b[o + 1]]));
            let q5 = ty == GgmlType::Q5_1;
            let bb = ty.block_bytes();
            let n = nb * 32;
            let rb = nb * bb;
            let (wq, packed, xs) = fixture(ty, n, &mut s);
            let mut want = [[0.0f32; 4]; ROWS];
            for r in 0..ROWS {
                for c in 0..4 {
                    let (mut acc, mut summ) = (0.0f32, 0.0f32);
                    for i in 0..nb {
                        let wb = &wq[r * rb + i * bb..][..bb];
                        let xb = &xs[c][i * 36..(i + 1) * 36];
                        let (qh, qs) = if q5 {
                            (u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]), 8)
                        } else {
                            (0, 4)
                        };
                        let mut isum = 0i32;
                        for e in 0..32 {
                            let byte = wb[qs + e % 16];
                            let nib = if e < 16 { byte & 15 } else { byte >> 4 };
                            let q = nib as i32 | (((qh >> e) & 1) as i32 * 16);
                            isum += q * xb[4 + e] as i8 as i32;
                        }
                        acc = (f16at(wb, 0) * f16at(xb, 0)).mul_add(isum as f32, acc);
                        summ = f16at(wb, 2).mul_add(f16at(xb, 2), summ);
                    }
                    want[r][c] = acc + summ;
                }
            }
            let bits = |m: [[f32; 4]; ROWS]| m.map(|r| r.map(f32::to_bits));
            let e: &[i32] = &[];
            let mut got = [[0.0f32; 4]; ROWS];
            packed_scalar::<4>(
                ty,
                &packed,
                &[&xs[0], &xs[1], &xs[2], &xs[3]],
                &[e; 4],
                &mut got,
            );
            assert_eq!(bits(got), bits(want), "{ty} scalar nb={nb}");
            for level in crate::cpu::available() {
                let (k1, k4) = kernels(level);
                let mut g4 = [[0.0f32; 4]; ROWS];
                k4(
                    ty,
                    &packed,
                    &[&xs[0], &xs[1], &xs[2], &xs[3]],
                    &[e; 4],
                    &mut g4,
                );
                assert_eq!(bits(g4), bits(want), "{ty} {level:?} x4 nb={nb}");
                let mut g1 = [[0.0f32; 1]; ROWS];
                k1(ty, &packed, &[&xs[3]], &[e], &mut g1);
                for r in 0..ROWS {
                    assert_eq!(
                        g1[r][0].to_bits(),
                        want[r][3].to_bits(),
                        "{ty} {level:?} x1"
                    );
                }
                // and it agrees with the canonical dot closely
                for r in 0..ROWS {
                    let d = k.dot_at(crate::cpu::Level::Scalar, &wq[r * rb..(r + 1) * rb], &xs[0]);
                    assert!(
                        (d - want[r][0]).abs() <= 1e-4 * (1.0 + d.abs()),
                        "{d} {}",
                        want[r][0]
                    );
                }
            }
        }
    }

    /// The extreme levels (every weight at its largest or smallest level,
    /// every activation at +-127) give the scalar twin's bits at every
    /// level: no SIMD pair or block sum saturates.
    #[test]
    fn extreme_levels_do_not_saturate() {
        let one = half::f16::from_f32(0.5).to_le_bytes();
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ] {
            let nb = 3;
            let (bb, kq) = (ty.block_bytes(), ty.block_len() == 256);
            // Q4_1 and Q5_1 take Q8_1 activations: scale, sum, 32 levels
            let q41 = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
            let xbb = if q41 { 36 } else { 34 };
            for wbyte in [0x00u8, 0xff, 0x80, 0x7f] {
                let mut wq = vec![wbyte; ROWS * nb * bb];
                for b in wq.chunks_exact_mut(bb) {
                    if ty == GgmlType::Q6K {
                        // its scale comes last
                        b[bb - 2..].copy_from_slice(&one);
                        continue;
                    }
                    b[..2].copy_from_slice(&one);
                    if kq || q41 {
                        b[2..4].copy_from_slice(&one);
                    }
                }
                let packed = repack(ty, &wq, nb * ty.block_len(), ROWS).unwrap();
                for ybyte in [127u8, 129] {
                    let mut x = vec![ybyte; nb * xbb];
                    if kq {
                        // Q8_K: f32 scale, 256 levels, 16 sums of 16
                        x = Vec::new();
                        for _ in 0..nb {
                            x.extend(0.5f32.to_le_bytes());
                            x.extend([ybyte; 256]);
                            for _ in 0..16 {
                                x.extend((16 * ybyte as i8 as i16).to_le_bytes());
                            }
                        }
                    } else {
                        for b in x.chunks_exact_mut(xbb) {
                            b[..2].copy_from_slice(&one);
                            if q41 {
                                b[2..4].copy_from_slice(&one);
                            }
                        }
                    }
                    let mut ys = vec![0; nb];
                    if !q41 {
                        act_sums(&x, &mut ys);
                    }
                    let mut want = [[0.0f32; 1]; ROWS];
                    packed_scalar::<1>(ty, &packed, &[&x], &[&ys], &mut want);
                    for level in crate::cpu::available() {
                        let (k1, k4) = kernels(level);
                        let mut g1 = [[0.0f32; 1]; ROWS];
                        k1(ty, &packed, &[&x], &[&ys], &mut g1);
                        let mut g4 = [[0.0f32; 4]; ROWS];
                        k4(ty, &packed, &[&x; 4], &[&ys; 4], &mut g4);
                        for r in 0..ROWS {
                            let w = want[r][0].to_bits();
                            assert_eq!(g1[r][0].to_bits(), w, "{ty} {level:?} {wbyte:x} {ybyte}");
                            assert!(g4[r].iter().all(|v| v.to_bits() == w), "{ty} {level:?}");
                        }
                    }
                }
            }
        }
    }

    /// Decode over several row groups in lockstep gives, group by group,
    /// the one-column kernel's bits.
    #[test]
    fn lockstep_groups_equal_the_one_column_kernel_bitwise() {
        let mut s = 41u64;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ] {
            for nb in [1usize, 3, 8] {
                let n = nb * ty.block_len();
                let groups: Vec<_> = (0..4).map(|_| fixture(ty, n, &mut s)).collect();
                let x = &groups[0].2[1];
                let mut ys = vec![0; nb];
                if ty.block_len() == 32 && ty != GgmlType::Q4_1 {
                    act_sums(x, &mut ys);
                }
                let w: [&[u8]; 4] = std::array::from_fn(|k| groups[k].1.as_slice());
                for level in crate::cpu::available() {
                    let mut got = [[0.0f32; ROWS]; 4];
                    let ok = packed_groups::<4>(level, ty, w, x, &ys, &mut got);
                    assert_eq!(ok, groups_supported(level, ty), "{ty} {level:?}");
                    if !ok {
                        assert!(got.iter().flatten().all(|&v| v == 0.0));
                        continue;
                    }
                    let (k1, _) = kernels(level);
                    for k in 0..4 {
                        let mut want = [[0.0f32; 1]; ROWS];
                        k1(ty, w[k], &[x], &[&ys], &mut want);
                        let want: Vec<u32> = want.iter().map(|r| r[0].to_bits()).collect();
                        let have: Vec<u32> = got[k].iter().map(|v| v.to_bits()).collect();
                        assert_eq!(have, want, "{ty} {level:?} nb={nb} group {k}");
                    }
                    let mut one = [[0.0f32; ROWS]; 1];
                    assert!(packed_groups::<1>(level, ty, [w[2]], x, &ys, &mut one));
                    assert_eq!(one[0].map(f32::to_bits), got[2].map(f32::to_bits));
                }
            }
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_not_repacked() {
        assert!(repack(GgmlType::Q4_0, &[0u8; 18 * 8], 32, 8).is_none());
        assert!(repack(GgmlType::Q4_1, &[0u8; 20 * 8], 32, 8).is_none());
        assert!(repack(GgmlType::Q4_1, &[0u8; 20 * 16], 31, 16).is_none());
        assert!(repack(GgmlType::Q5_1, &[0u8; 24 * 8], 32, 8).is_none());
        assert!(repack(GgmlType::Q8_0, &[0u8; 10], 32, 16).is_none());
    }

    /// Repacked Q4_1, Q4_K, Q5_K and Q6_K equal the canonical dot of each
    /// row bit for bit (Q4_1: odd and even block counts).
    #[test]
    fn packed_kquants_and_q4_1_equal_the_canonical_dot_bitwise() {
        let mut s = 17u64;
        for (ty, nb) in [
            (GgmlType::Q4_1, 1usize),
            (GgmlType::Q4_1, 2),
            (GgmlType::Q4_1, 7),
            (GgmlType::Q4_1, 18),
            (GgmlType::Q4K, 1),
            (GgmlType::Q4K, 3),
            (GgmlType::Q5K, 1),
            (GgmlType::Q5K, 3),
            (GgmlType::Q6K, 1),
            (GgmlType::Q6K, 3),
        ] {
            let k = kernels_for(ty).unwrap();
            {
                let n = nb * ty.block_len();
                let rb = nb * ty.block_bytes();
                let (wq, packed, xs) = fixture(ty, n, &mut s);
                let e: &[i32] = &[];
                for level in crate::cpu::available() {
                    let (k1, k4) = kernels(level);
                    let mut g4 = [[0.0f32; 4]; ROWS];
                    k4(
                        ty,
                        &packed,
                        &[&xs[0], &xs[1], &xs[2], &xs[3]],
                        &[e, e, e, e],
                        &mut g4,
                    );
                    let mut g1 = [[0.0f32; 1]; ROWS];
                    k1(ty, &packed, &[&xs[1]], &[e], &mut g1);
                    for r in 0..ROWS {
                        for c in 0..4 {
                            let want = k.dot_at(
                                crate::cpu::Level::Scalar,
                                &wq[r * rb..(r + 1) * rb],
                                &xs[c],
                            );
                            assert_eq!(
                                g4[r][c].to_bits(),
                                want.to_bits(),
                                "{ty} {level:?} nb={nb} ({r},{c})"
                            );
                        }
                        let want =
                            k.dot_at(crate::cpu::Level::Scalar, &wq[r * rb..(r + 1) * rb], &xs[1]);
                        assert_eq!(g1[r][0].to_bits(), want.to_bits(), "{level:?} x1");
                    }
                }
            }
        }
    }

    /// Row groups repack independently: two halves through `repack_into`
    /// give the bytes of the whole; wrong lengths are refused untouched.
    #[test]
    fn parts_repack_to_the_bytes_of_the_whole() {
        let mut s = 23u64;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ] {
            let k = kernels_for(ty).unwrap();
            let (n, rows) = (256usize, 4 * ROWS);
            let rb = ty.row_bytes(n as u64).unwrap() as usize;
            let w: Vec<f32> = (0..rows * n).map(|_| lcg(&mut s)).collect();
            let mut wq = vec![0u8; rows * rb];
            for r in 0..rows {
                k.quantize(&w[r * n..(r + 1) * n], &mut wq[r * rb..(r + 1) * rb])
                    .unwrap();
            }
            let whole = repack(ty, &wq, n, rows).unwrap();
            let half = packed_len(ty, n, rows / 2).unwrap();
            let mut parts = vec![0u8; whole.len()];
            let (a, b) = parts.split_at_mut(half);
            let (wa, wb) = wq.split_at(rows / 2 * rb);
            assert!(repack_into(ty, wa, n, rows / 2, a));
            assert!(repack_into(ty, wb, n, rows / 2, b));
            assert_eq!(parts, whole, "{ty}");
            let mut short = vec![7u8; half - 1];
            assert!(!repack_into(ty, wa, n, rows / 2, &mut short));
            assert!(short.iter().all(|&x| x == 7));
        }
    }
}
