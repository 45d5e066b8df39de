//! Every SIMD dot against its scalar twin, at every level this machine
//! runs (AVX2 and AVX-512 on x86-64, NEON on aarch64).

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
        if self.next().is_multiple_of(23) {
            u * 40.0
        } else {
            u
        }
    }
}

const TYPES: [GgmlType; 10] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q5K,
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
        // the float types' rows are elements: long ones too (vector
        // part and tail)
        let extra: &[usize] = if ty.block_len() == 1 {
            &[16, 31, 100, 257]
        } else {
            &[]
        };
        for nb in (1..=9usize).chain(extra.iter().copied()) {
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
                let want = k.dot_at(Level::Scalar, &wq, &xq);
                for &l in &levels {
                    let got = k.dot_at(l, &wq, &xq);
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
        let want = k.dot_at(Level::Scalar, &wq[1..], &xq[3..]);
        for l in available() {
            assert!(same(k.dot_at(l, &wq[1..], &xq[3..]), want), "{ty} {l:?}");
        }
    }
}

/// Every tile shape gives, for each (row, column), the single dot
/// product of that pair, bit for bit, at every level.
#[test]
fn tiles_equal_single_dots_bitwise() {
    let mut rng = Lcg(5);
    for ty in TYPES {
        let k = kernels_for(ty).unwrap();
        let act = kernels_for(k.vec_dot_type).unwrap();
        let n = 5 * ty.block_len();
        let quant = |rng: &mut Lcg, kern: &crate::TypeKernels, a: bool| {
            let v: Vec<f32> = (0..n).map(|_| rng.f()).collect();
            let mut q = vec![0u8; kern.ty.row_bytes(n as u64).unwrap() as usize];
            if a {
                kern.quantize_act(&v, &mut q).unwrap();
            } else {
                kern.quantize(&v, &mut q).unwrap();
            }
            q
        };
        let ws: Vec<Vec<u8>> = (0..4).map(|_| quant(&mut rng, k, false)).collect();
        let xs: Vec<Vec<u8>> = (0..4).map(|_| quant(&mut rng, act, true)).collect();
        for l in available() {
            let t = k.tiles_at(l);
            let single = |r: usize, c: usize| k.dot_at(Level::Scalar, &ws[r], &xs[c]);
            let mut o41 = [[0.0f32; 1]; 4];
            (t.t4x1)(&[&ws[0], &ws[1], &ws[2], &ws[3]], &[&xs[2]], &mut o41);
            for r in 0..4 {
                assert!(same(o41[r][0], single(r, 2)), "{ty} {l:?} 4x1 row {r}");
            }
            let mut o24 = [[0.0f32; 4]; 2];
            (t.t2x4)(
                &[&ws[1], &ws[3]],
                &[&xs[0], &xs[1], &xs[2], &xs[3]],
                &mut o24,
            );
            for (r, wr) in [1, 3].into_iter().enumerate() {
                for c in 0..4 {
                    assert!(same(o24[r][c], single(wr, c)), "{ty} {l:?} 2x4 ({r},{c})");
                }
            }
        }
    }
}

/// aarch64 always has NEON: the comparisons above then cover it.
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_is_a_level_on_aarch64() {
    assert!(available().contains(&Level::Neon));
    assert_eq!(crate::cpu::detected(), Level::Neon);
}
