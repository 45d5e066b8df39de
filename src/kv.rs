//! Per-block KV caches. A block at level k holds only the tokens kept at
//! every level up to k, so inner caches are shorter. Each reserves address
//! space for the session's context when made (pages are touched only as rows
//! arrive, so a short inner cache costs only its rows), and grows by chunks
//! of [`GROW_ROWS`] rows only past that. Rows are stored in the cache type
//! and read in place by attention. Keys are stored after RoPE.

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

/// Cached rows of one kind (K or V), stored as the cache type itself so
/// that attention reads them where they lie.
#[derive(Clone, Debug)]
pub enum Rows {
    F16(Vec<f16>),
    F32(Vec<f32>),
    /// Q8_0 blocks, `row_bytes` per row.
    Q8_0(Vec<u8>),
}

impl Rows {
    fn new(ty: KvType) -> Rows {
        match ty {
            KvType::F16 => Rows::F16(Vec::new()),
            KvType::F32 => Rows::F32(Vec::new()),
            KvType::Q8_0 => Rows::Q8_0(Vec::new()),
        }
    }
    /// Bytes of one stored element.
    fn elem_bytes(&self) -> usize {
        match self {
            Rows::F16(_) => 2,
            Rows::F32(_) => 4,
            Rows::Q8_0(_) => 1,
        }
    }
    fn bytes(&self) -> usize {
        self.len() * self.elem_bytes()
    }
    fn capacity_bytes(&self) -> usize {
        self.capacity() * self.elem_bytes()
    }
    /// Elements (or bytes, for Q8_0) per row of `width` values.
    fn unit(ty: KvType, width: usize) -> usize {
        match ty {
            KvType::F16 | KvType::F32 => width,
            KvType::Q8_0 => ty.row_bytes(width),
        }
    }
    fn truncate(&mut self, n: usize) {
        match self {
            Rows::F16(v) => v.truncate(n),
            Rows::F32(v) => v.truncate(n),
            Rows::Q8_0(v) => v.truncate(n),
        }
    }
    /// Reserves room for `n` more units without reallocating on the way;
    /// a failed reservation (address space) is left to growth by chunks.
    fn reserve(&mut self, n: usize) {
        let _ = match self {
            Rows::F16(v) => v.try_reserve_exact(n),
            Rows::F32(v) => v.try_reserve_exact(n),
            Rows::Q8_0(v) => v.try_reserve_exact(n),
        };
    }
    fn len(&self) -> usize {
        match self {
            Rows::F16(v) => v.len(),
            Rows::F32(v) => v.len(),
            Rows::Q8_0(v) => v.len(),
        }
    }
    fn capacity(&self) -> usize {
        match self {
            Rows::F16(v) => v.capacity(),
            Rows::F32(v) => v.capacity(),
            Rows::Q8_0(v) => v.capacity(),
        }
    }
    /// Appends rows of `width` f32 values, converted to the storage type.
    fn push(&mut self, src: &[f32], width: usize) {
        match self {
            Rows::F16(v) => v.extend(src.iter().map(|&x| f16::from_f32(x))),
            Rows::F32(v) => v.extend_from_slice(src),
            Rows::Q8_0(v) => {
                let kern = kernels_for(GgmlType::Q8_0).expect("supported");
                let rb = KvType::Q8_0.row_bytes(width);
                let start = v.len();
                v.resize(start + src.len() / width * rb, 0);
                for (r, x) in src.chunks_exact(width).enumerate() {
                    kern.quantize(x, &mut v[start + r * rb..start + (r + 1) * rb])
                        .expect("row sizes match");
                }
            }
        }
    }
}

/// Address space reserved up front per cache (K and V each), at most: a
/// cache of a long context takes pages only as rows arrive, but never more
/// reserved address space than this; past it, it grows by chunks.
const MAX_RESERVE_BYTES: usize = 1 << 30;

/// One block's cache: keys, values and the absolute position of each row.
#[derive(Clone, Debug)]
pub struct LayerCache {
    pub ty: KvType,
    pub width: usize,
    k: Rows,
    v: Rows,
    pos: Vec<u32>,
}

impl LayerCache {
    /// A cache for rows of `width` values. Room for `reserve_rows` rows is
    /// reserved (address space only: pages are touched as rows arrive), so
    /// growth within the context never reallocates and copies.
    pub fn new(ty: KvType, width: usize, reserve_rows: usize) -> LayerCache {
        let row_bytes = ty.row_bytes(width).max(1);
        let rows = reserve_rows.min(MAX_RESERVE_BYTES / row_bytes);
        let mut c = LayerCache {
            ty,
            width,
            k: Rows::new(ty),
            v: Rows::new(ty),
            pos: Vec::new(),
        };
        let n = rows * Rows::unit(ty, width);
        c.k.reserve(n);
        c.v.reserve(n);
        let _ = c.pos.try_reserve_exact(rows);
        c
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
        self.k.bytes() + self.v.bytes()
    }

    /// Bytes allocated (capacity: address space, touched only as used).
    pub fn capacity_bytes(&self) -> usize {
        self.k.capacity_bytes() + self.v.capacity_bytes()
    }

    /// Empties the cache (the reservation stays).
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Drops every row from `n` on.
    pub fn truncate(&mut self, n: usize) {
        let unit = Rows::unit(self.ty, self.width);
        self.k.truncate(n * unit);
        self.v.truncate(n * unit);
        self.pos.truncate(n);
    }

    /// Appends rows (`k`, `v` are `rows x width` row-major f32).
    pub fn append(&mut self, k: &[f32], v: &[f32], pos: &[u32]) {
        let rows = pos.len();
        debug_assert_eq!(k.len(), rows * self.width);
        let unit = Rows::unit(self.ty, self.width);
        let need = (self.pos.len() + rows) * unit;
        if need > self.k.capacity() {
            // past the reservation: grow by whole chunks of rows
            let rows_cap = need.div_ceil(unit).div_ceil(GROW_ROWS) * GROW_ROWS;
            self.k.reserve(rows_cap * unit - self.k.len());
            self.v.reserve(rows_cap * unit - self.v.len());
        }
        self.k.push(k, self.width);
        self.v.push(v, self.width);
        self.pos.extend_from_slice(pos);
    }

    /// The cached keys, as stored.
    pub fn keys(&self) -> &Rows {
        &self.k
    }

    /// The cached values, as stored.
    pub fn values(&self) -> &Rows {
        &self.v
    }

    /// All cached keys and values as f32 (`len x width` each): for tests
    /// and tools; attention reads the rows in place.
    pub fn to_f32(&self) -> (Vec<f32>, Vec<f32>) {
        let conv = |rows: &Rows| -> Vec<f32> {
            match rows {
                Rows::F32(v) => v.clone(),
                Rows::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
                Rows::Q8_0(b) => {
                    let mut out = vec![0.0; self.len() * self.width];
                    kernels_for(GgmlType::Q8_0)
                        .expect("supported")
                        .dequantize(b, &mut out)
                        .expect("sizes match");
                    out
                }
            }
        };
        (conv(&self.k), conv(&self.v))
    }
}
