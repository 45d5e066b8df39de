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
    packed: Vec<Option<OnceLock<Option<Packed>>>>,
}

/// A packed copy's bytes. Where `SUBLLM_HUGEPAGES` is not `0`, an
/// anonymous mapping the kernel is asked to back with transparent huge
/// pages (`MADV_HUGEPAGE`; Linux's default THP mode serves only mappings
/// that ask): a matrix read front to back every token then walks one TLB
/// entry per 2 MiB instead of one per 4 KiB, and its first touch faults
/// once per 2 MiB. Elsewhere, or where the mapping fails, a plain vector.
enum Packed {
    Map(memmap2::MmapMut),
    Heap(Vec<u8>),
}

impl Packed {
    fn zeroed(len: usize, huge: bool) -> Packed {
        if huge && len > 0 {
            if let Ok(m) = memmap2::MmapMut::map_anon(len) {
                #[cfg(target_os = "linux")]
                {
                    // advice only: where THP is off the pages stay small
                    let _ = m.advise(memmap2::Advice::HugePage);
                }
                return Packed::Map(m);
            }
        }
        Packed::Heap(vec![0u8; len])
    }
}

impl std::ops::Deref for Packed {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Packed::Map(m) => m,
            Packed::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for Packed {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Packed::Map(m) => m,
            Packed::Heap(v) => v,
        }
    }
}

/// Whether packed copies ask for huge pages: unless `SUBLLM_HUGEPAGES=0`.
fn huge_pages_asked() -> bool {
    static ASKED: OnceLock<bool> = OnceLock::new();
    *ASKED.get_or_init(|| std::env::var("SUBLLM_HUGEPAGES").map_or(true, |v| v.trim() != "0"))
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
) -> Option<Packed> {
    use rayon::prelude::*;
    use subllm_kernels::repack::{packed_len, repack_into, ROWS};
    let mut out = Packed::zeroed(packed_len(ty, n_in, n_out)?, huge_pages_asked());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_buffers_start_zeroed_and_hold_what_is_written() {
        for huge in [false, true] {
            for len in [0usize, 1, 4095, 3 << 20] {
                let mut p = Packed::zeroed(len, huge);
                assert_eq!(p.len(), len);
                assert!(p.iter().all(|&b| b == 0), "len {len}, huge {huge}");
                for (i, b) in p.iter_mut().enumerate() {
                    *b = i as u8;
                }
                assert!(p.iter().enumerate().all(|(i, &b)| b == i as u8));
            }
        }
    }

    #[test]
    fn parallel_repack_is_the_kernels_repack() {
        // 200 groups of 16 rows: several parts of 64 groups and a short one
        let (n_in, n_out) = (64, 200 * subllm_kernels::repack::ROWS);
        let row = 2 * 18; // Q4_0: two blocks of 18 bytes
        let mut seed = 0x9e37_79b9u32;
        let bytes: Vec<u8> = (0..n_out * row)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                // block scales are f16: keep them finite
                if i % 18 == 1 {
                    0x3c
                } else {
                    (seed >> 24) as u8
                }
            })
            .collect();
        let want = subllm_kernels::repack::repack(GgmlType::Q4_0, &bytes, n_in, n_out)
            .expect("Q4_0 repacks");
        let parts = std::sync::atomic::AtomicUsize::new(0);
        let got = repack_parallel(GgmlType::Q4_0, &bytes, n_in, n_out, &|_, _| {
            parts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .expect("repacked");
        assert_eq!(&*got, &want[..]);
        assert_eq!(parts.into_inner(), 4);
    }
}
