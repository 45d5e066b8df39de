//! The CPU backend's form of a model's matrices: each matrix whose type
//! and shape have packed kernels on this CPU re-laid out in groups of
//! sixteen rows (`subllm_kernels::repack`), made at its first use so that
//! loading stays a map-and-check; the rest are read where they lie in the
//! mapped file.

use std::sync::OnceLock;

use crate::model::{Model, Weight};
use subllm_kernels::GgmlType;

/// The packed copies, by matrix id.
#[derive(Default)]
pub struct CpuWeights {
    /// `None`: read in place. Inside, `None` once found not packable.
    packed: Vec<Option<OnceLock<Option<Vec<u8>>>>>,
}

impl CpuWeights {
    /// The packed copy plan for `model`: every multiplied matrix whose
    /// type and shape have packed SIMD kernels at this CPU's level, where
    /// the model allows repacking.
    pub fn plan(model: &Model) -> CpuWeights {
        let on = model.repack_allowed();
        let level = subllm_kernels::cpu::level();
        CpuWeights {
            packed: (0..model.n_matrices())
                .map(|id| {
                    let w = model.matrix(id);
                    (on && w.multiplied
                        && subllm_kernels::repack::supported(w.ty, w.n_out)
                        && subllm_kernels::repack::has_kernels(level, w.ty))
                    .then(OnceLock::new)
                })
                .collect(),
        }
    }

    /// Matrix `w`'s packed rows, made now if this is their first use; the
    /// mapped pages of the original are released as each part is done.
    pub fn packed<'a>(&'a self, w: &Weight) -> Option<&'a [u8]> {
        let cell = self.packed.get(w.id)?.as_ref()?;
        cell.get_or_init(|| {
            repack_parallel(w.ty, w.bytes, w.n_in, w.n_out, &|f, l| w.release(f, l))
        })
        .as_deref()
    }

    /// Matrices with a packed copy made so far.
    pub fn n_packed(&self) -> usize {
        self.packed
            .iter()
            .filter(|c| {
                c.as_ref()
                    .is_some_and(|c| c.get().is_some_and(Option::is_some))
            })
            .count()
    }
}

/// `subllm_kernels::repack::repack` over parts of whole row groups in
/// parallel, straight into one buffer (groups are independent, so the bytes
/// are the same). `release(from, len)` is called for each part of `bytes`
/// once repacked.
fn repack_parallel(
    ty: GgmlType,
    bytes: &[u8],
    n_in: usize,
    n_out: usize,
    release: &(dyn Fn(usize, usize) + Sync),
) -> Option<Vec<u8>> {
    use rayon::prelude::*;
    use subllm_kernels::repack::{packed_len, repack_into, ROWS};
    let mut out = vec![0u8; packed_len(ty, n_in, n_out)?];
    // 64 groups per part, on both sides
    let groups = n_out / ROWS;
    let (src, dst) = (bytes.len() / groups * 64, out.len() / groups * 64);
    let ok = out
        .par_chunks_mut(dst)
        .zip(bytes.par_chunks(src))
        .enumerate()
        .all(|(i, (o, c))| {
            let rows = c.len() / (bytes.len() / n_out);
            let done = repack_into(ty, c, n_in, rows, o);
            release(i * src, c.len());
            done
        });
    ok.then_some(out)
}
