//! Per-block KV caches. A block at level k holds only the tokens kept at
//! every level up to k, so inner caches are shorter; each grows in chunks
//! of [`GROW_ROWS`] rows as tokens arrive (nothing is preallocated at full
//! context). Keys are stored after RoPE.

use half::f16;
use subllm_kernels::{kernels_for, GgmlType};

/// Rows added to a cache's capacity at a time.
pub const GROW_ROWS: usize = 256;

/// Storage type of cached keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KvType {
    #[default]
    F16,
    F32,
    Q8_0,
}

impl KvType {
    pub fn ggml(self) -> GgmlType {
        match self {
            KvType::F16 => GgmlType::F16,
            KvType::F32 => GgmlType::F32,
            KvType::Q8_0 => GgmlType::Q8_0,
        }
    }

    pub fn parse(s: &str) -> Option<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Some(KvType::F16),
            "f32" => Some(KvType::F32),
            "q8_0" => Some(KvType::Q8_0),
            _ => None,
        }
    }

    /// Bytes of one cached row of `width` values (K or V).
    pub fn row_bytes(self, width: usize) -> usize {
        self.ggml()
            .row_bytes(width as u64)
            .expect("width checked at session creation") as usize
    }
}

/// One block's cache: keys, values and the absolute position of each row.
#[derive(Clone, Debug)]
pub struct LayerCache {
    pub ty: KvType,
    pub width: usize,
    k: Vec<u8>,
    v: Vec<u8>,
    pos: Vec<u32>,
}

impl LayerCache {
    pub fn new(ty: KvType, width: usize) -> LayerCache {
        LayerCache {
            ty,
            width,
            k: Vec::new(),
            v: Vec::new(),
            pos: Vec::new(),
        }
    }

    /// Cached rows.
    pub fn len(&self) -> usize {
        self.pos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pos.is_empty()
    }

    /// Absolute positions of the cached rows.
    pub fn positions(&self) -> &[u32] {
        &self.pos
    }

    /// Bytes holding cached keys and values (what is in use).
    pub fn bytes(&self) -> usize {
        self.k.len() + self.v.len()
    }

    /// Bytes allocated (capacity).
    pub fn capacity_bytes(&self) -> usize {
        self.k.capacity() + self.v.capacity()
    }

    pub fn clear(&mut self) {
        self.k = Vec::new();
        self.v = Vec::new();
        self.pos = Vec::new();
    }

    /// Drops every row from `n` on.
    pub fn truncate(&mut self, n: usize) {
        let rb = self.ty.row_bytes(self.width);
        self.k.truncate(n * rb);
        self.v.truncate(n * rb);
        self.pos.truncate(n);
    }

    /// Appends rows (`k`, `v` are `rows x width` row-major f32).
    pub fn append(&mut self, k: &[f32], v: &[f32], pos: &[u32]) {
        let rows = pos.len();
        debug_assert_eq!(k.len(), rows * self.width);
        let rb = self.ty.row_bytes(self.width);
        let need = (self.pos.len() + rows) * rb;
        if need > self.k.capacity() {
            let rows_cap = need.div_ceil(rb).div_ceil(GROW_ROWS) * GROW_ROWS;
            self.k.reserve_exact(rows_cap * rb - self.k.len());
            self.v.reserve_exact(rows_cap * rb - self.v.len());
        }
        let kern = kernels_for(self.ty.ggml()).expect("cache types are supported");
        for (buf, src) in [(&mut self.k, k), (&mut self.v, v)] {
            let start = buf.len();
            buf.resize(start + rows * rb, 0);
            for r in 0..rows {
                kern.quantize(
                    &src[r * self.width..(r + 1) * self.width],
                    &mut buf[start + r * rb..start + (r + 1) * rb],
                )
                .expect("row sizes match");
            }
        }
        self.pos.extend_from_slice(pos);
    }

    /// All cached keys and values as f32 (`len x width` each).
    pub fn to_f32(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.len() * self.width;
        let conv = |buf: &[u8]| -> Vec<f32> {
            match self.ty {
                KvType::F32 => buf
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                KvType::F16 => buf
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                KvType::Q8_0 => {
                    let mut out = vec![0.0; n];
                    kernels_for(GgmlType::Q8_0)
                        .expect("supported")
                        .dequantize(buf, &mut out)
                        .expect("sizes match");
                    out
                }
            }
        };
        (conv(&self.k), conv(&self.v))
    }
}
