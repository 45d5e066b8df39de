//! Q8_0: 32 weights as int8 times one f16 scale (34 bytes).

use super::{QuantType, VecDot};
use crate::fp::{f16_to_f32, f32_to_f16, round_away};
use crate::ggml_block;
use crate::types::GgmlType;
use half::f16;

pub const QK8_0: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlockQ8_0 {
    /// Scale; value = q * d.
    pub d: f16,
    pub qs: [i8; QK8_0],
}
ggml_block!(BlockQ8_0, GgmlType::Q8_0);

/// ggml's x86 activation quantizer for Q8_0/Q8_1 blocks: the multiplier
/// is 127/amax (not 1/d) and halves round to even. Returns d.
#[inline(always)]
pub(super) fn q8_act(xb: &[f32], qs: &mut [i8]) -> f32 {
    // eight running maxima, one per lane of a vector, so the loop
    // vectorizes; `max` ignores NaN and is exact, so any grouping gives the
    // same value as one sequential fold
    let mut lanes = [0.0f32; 8];
    for c in xb.chunks_exact(8) {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    let amax = lanes
        .iter()
        .chain(xb.chunks_exact(8).remainder())
        .fold(0.0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(xb) {
        *q = (v * id).round_ties_even() as i8;
    }
    d
}

/// The Q8 scale rule shared by Q8_0 and Q8_1: returns (d, 1/d or 0).
#[inline]
pub(super) fn q8_scale(xb: &[f32]) -> (f32, f32) {
    // C's MAX(a, b) = a > b ? a : b (a NaN input propagates, as in ggml)
    let amax = xb
        .iter()
        .fold(0.0f32, |a, &v| if a > v.abs() { a } else { v.abs() });
    let d = amax / 127.0;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

pub struct Q8_0;

impl QuantType for Q8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_0;
    type Block = BlockQ8_0;

    fn quantize_ref(x: &[f32], y: &mut [BlockQ8_0]) {
        for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
            let (d, id) = q8_scale(xb);
            yb.d = f32_to_f16(d);
            for (q, &v) in yb.qs.iter_mut().zip(xb) {
                *q = round_away(v * id) as i8;
            }
        }
    }

    #[inline(always)]
    fn quantize_act(x: &[f32], y: &mut [BlockQ8_0]) {
        for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
            yb.d = f32_to_f16(q8_act(xb, &mut yb.qs));
        }
    }

    fn dequantize(x: &[BlockQ8_0], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
            let d = f16_to_f32(xb.d);
            for (o, &q) in yb.iter_mut().zip(&xb.qs) {
                *o = q as f32 * d;
            }
        }
    }
}

impl VecDot for Q8_0 {
    type Act = Q8_0;
    fn vec_dot(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
        let mut acc = super::Lanes8::default();
        for (a, b) in w.iter().zip(x) {
            acc.add_block(f16_to_f32(a.d) * f16_to_f32(b.d), |i| {
                a.qs[i] as i32 * b.qs[i] as i32
            });
        }
        acc.sum()
    }
}
