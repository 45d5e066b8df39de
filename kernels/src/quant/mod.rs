//! Quantization block formats, byte-identical to ggml's.
//!
//! Each type lives in its own file: a `#[repr(C)]` block struct with a
//! compile-time size check, and an implementation of [`QuantType`] holding
//! the scalar reference quantizer (equal bit for bit to ggml's `*_ref`
//! quantizers) and dequantizer. [`kernels_for`] is the runtime table that
//! the rest of the engine dispatches through; adding a type means one new
//! file and one row there.

mod bf16;
mod f16;
mod f32;
mod kquant;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_1;
mod q8_k;

pub use self::bf16::Bf16;
pub use self::f16::F16;
pub use self::f32::F32;
pub use q4_0::{BlockQ4_0, Q4_0};
pub use q4_1::{BlockQ4_1, Q4_1};
pub use q4_k::{BlockQ4K, Q4K};
pub use q5_0::{BlockQ5_0, Q5_0};
pub use q5_1::{BlockQ5_1, Q5_1};
pub use q5_k::{BlockQ5K, Q5K};
pub use q6_k::{BlockQ6K, Q6K};
pub use q8_0::{BlockQ8_0, Q8_0};
pub use q8_1::{BlockQ8_1, Q8_1};
pub use q8_k::{BlockQ8K, Q8K};

use crate::types::GgmlType;

/// The 6-bit (scale, min) of sub-block `j` of a Q4_K/Q5_K super-block.
pub(crate) use kquant::get_scale_min_k4 as kquant_scale_min;

/// Elements in a k-quant super-block.
pub const QK_K: usize = 256;

/// Plain-old-data blocks that may be viewed straight from file bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]` (or a primitive), contain no padding,
/// and accept every bit pattern as a valid value (integers, `f16`, `bf16`,
/// `f32` and arrays of them only).
pub unsafe trait Block: Copy + Default + Send + Sync + 'static {}

// SAFETY: primitives with no padding and no invalid bit patterns.
unsafe impl Block for f32 {}
// SAFETY: `half::f16` is a transparent u16; every bit pattern is a value.
unsafe impl Block for half::f16 {}
// SAFETY: `half::bf16` is a transparent u16; every bit pattern is a value.
unsafe impl Block for half::bf16 {}

/// Why a byte slice cannot be used as blocks of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// The type has no quantize/dequantize implementation here.
    Unsupported(GgmlType),
    /// A length is not a whole number of blocks, or input and output disagree.
    Length {
        ty: GgmlType,
        elements: usize,
        bytes: usize,
    },
}

impl std::fmt::Display for QuantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuantError::Unsupported(t) => write!(f, "tensor type {t} is not supported"),
            QuantError::Length {
                ty,
                elements,
                bytes,
            } => write!(
                f,
                "{elements} elements do not fit {bytes} bytes of {ty} \
                 (blocks of {} elements in {} bytes)",
                ty.block_len(),
                ty.block_bytes()
            ),
        }
    }
}

impl std::error::Error for QuantError {}

/// Views `bytes` as blocks, or `None` when the length is not a whole number
/// of blocks or the start is not aligned for `B`.
pub fn view_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    let size = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>())
    {
        return None;
    }
    // SAFETY: the pointer is aligned for B (checked above), the length is an
    // exact multiple of size_of::<B>() so the slice covers exactly the input
    // bytes, and `Block` guarantees every bit pattern is a valid B. The
    // lifetime is tied to `bytes`, which we only borrow immutably.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) })
}

/// The bytes of a block slice.
pub fn blocks_as_bytes<B: Block>(blocks: &[B]) -> &[u8] {
    // SAFETY: `Block` types have no padding, so every byte is initialised;
    // u8 has alignment 1 and the length is the exact byte size of the slice.
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(blocks))
    }
}

/// The bytes of a block slice, mutably.
pub fn blocks_as_bytes_mut<B: Block>(blocks: &mut [B]) -> &mut [u8] {
    // SAFETY: as in `blocks_as_bytes`; in addition any byte pattern written
    // through the result leaves valid B values, because `Block` guarantees
    // every bit pattern is valid.
    unsafe {
        std::slice::from_raw_parts_mut(
            blocks.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(blocks),
        )
    }
}

/// One storage type: its block format, reference quantizer and dequantizer.
pub trait QuantType: 'static {
    /// The ggml type this implements.
    const TYPE: GgmlType;
    /// The type activations are quantized to for this type's dot product.
    const VEC_DOT_TYPE: GgmlType;
    /// One block, `TYPE.block_bytes()` bytes long.
    type Block: Block;

    /// Quantize `x` (`y.len() * block_len` values) into `y`, exactly as
    /// ggml's reference quantizer does.
    fn quantize_ref(x: &[f32], y: &mut [Self::Block]);

    /// Dequantize `x` into `y` (`x.len() * block_len` values).
    fn dequantize(x: &[Self::Block], y: &mut [f32]);

    /// Whether ggml's quantizer of this type uses importance weights.
    const WEIGHTED: bool = false;

    /// Quantize one whole row `x` with importance weights `qw` (one per
    /// value: an importance matrix's row for this tensor), exactly as
    /// ggml's `quantize_<type>` does when handed them. Types whose ggml
    /// quantizer ignores the weights quantize as [`Self::quantize_ref`].
    fn quantize_row_weighted(x: &[f32], qw: &[f32], y: &mut [Self::Block]) {
        let _ = qw;
        Self::quantize_ref(x, y)
    }

    /// Quantize activations as ggml's CPU backend does before a dot
    /// product. The reference quantizer (for files) unless the type's CPU
    /// routine rounds differently.
    #[inline(always)]
    fn quantize_act(x: &[f32], y: &mut [Self::Block]) {
        Self::quantize_ref(x, y)
    }

    /// Elements per block.
    fn block_len() -> usize {
        Self::TYPE.block_len()
    }
}

/// A weight type's dot product with activations quantized to its partner
/// type `Act` (ggml's `vec_dot_type`): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for
/// Q4_1/Q5_1, Q8_K for the k-quants, plain f32 for the float types.
pub trait VecDot: QuantType {
    type Act: QuantType;
    /// The dot product of one weight row with one activation row.
    fn vec_dot(w: &[Self::Block], x: &[<Self::Act as QuantType>::Block]) -> f32;
}

/// The accumulation order of ggml's x86 dot products for 32-element
/// blocks: eight lanes, each the exact integer sum of four consecutive
/// products, accumulated per block as `fma(scale, lane, acc)`, then reduced
/// as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). Following it (also in our
/// scalar code) makes results equal to llama.cpp's bit for bit, and any
/// SIMD version of ours must keep exactly this order.
#[derive(Default)]
pub(crate) struct Lanes8([f32; 8]);

impl Lanes8 {
    #[inline]
    pub(crate) fn add_block(&mut self, scale: f32, prod: impl Fn(usize) -> i32) {
        for k in 0..8 {
            let s = prod(4 * k) + prod(4 * k + 1) + prod(4 * k + 2) + prod(4 * k + 3);
            self.0[k] = scale.mul_add(s as f32, self.0[k]);
        }
    }

    #[inline]
    pub(crate) fn sum(&self) -> f32 {
        let a = &self.0;
        let (r0, r1, r2, r3) = (a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]);
        (r0 + r2) + (r1 + r3)
    }
}

/// A type-erased dot product of a weight row and an activation row.
pub type VecDotFn = fn(&[u8], &[u8]) -> f32;

/// `out[r][c]` = dot(weight row `w[r]`, activation row `x[c]`), each equal
/// bit for bit to the single dot product of that pair.
pub type TileFn<const R: usize, const C: usize> = fn(&[&[u8]; R], &[&[u8]; C], &mut [[f32; C]; R]);

/// The tile shapes a matrix product uses: one pair, four weight rows with
/// one activation row (decode), two weight rows with four activation rows
/// (prefill).
#[derive(Clone, Copy)]
pub struct DotTiles {
    pub t1x1: TileFn<1, 1>,
    pub t4x1: TileFn<4, 1>,
    pub t2x4: TileFn<2, 4>,
}

macro_rules! scalar_tile {
    ($name:ident, $r:expr, $c:expr) => {
        fn $name<T: VecDot>(w: &[&[u8]; $r], x: &[&[u8]; $c], out: &mut [[f32; $c]; $r]) {
            for r in 0..$r {
                for c in 0..$c {
                    out[r][c] = vec_dot_erased::<T>(w[r], x[c]);
                }
            }
        }
    };
}
scalar_tile!(scalar_1x1, 1, 1);
scalar_tile!(scalar_4x1, 4, 1);
scalar_tile!(scalar_2x4, 2, 4);

/// A type-erased row of the dispatch table.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    pub ty: GgmlType,
    pub vec_dot_type: GgmlType,
    quantize: fn(&[f32], &mut [u8]),
    quantize_weighted: fn(&[f32], &[f32], &mut [u8]),
    /// Whether [`TypeKernels::quantize_row_weighted`] uses its weights.
    pub weighted: bool,
    quantize_act: fn(&[f32], &mut [u8]),
    dequantize: fn(&[u8], &mut [f32]),
    vec_dot: Option<VecDotFn>,
    tiles: Option<DotTiles>,
}

impl TypeKernels {
    fn check(&self, elements: usize, bytes: usize) -> Result<(), QuantError> {
        let err = QuantError::Length {
            ty: self.ty,
            elements,
            bytes,
        };
        if !elements.is_multiple_of(self.ty.block_len()) {
            return Err(err);
        }
        match (elements / self.ty.block_len()).checked_mul(self.ty.block_bytes()) {
            Some(b) if b == bytes => Ok(()),
            _ => Err(err),
        }
    }

    /// Quantize `x` into `out`, which must be exactly the type's size for
    /// `x.len()` elements.
    pub fn quantize(&self, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
        self.check(x.len(), out.len())?;
        (self.quantize)(x, out);
        Ok(())
    }

    /// Quantize one whole row `x` with importance weights `qw` (as many),
    /// as ggml does with an importance matrix (see
    /// [`QuantType::quantize_row_weighted`]); `out` must be exactly the
    /// type's size for `x.len()` elements.
    pub fn quantize_row_weighted(
        &self,
        x: &[f32],
        qw: &[f32],
        out: &mut [u8],
    ) -> Result<(), QuantError> {
        self.check(x.len(), out.len())?;
        if qw.len() != x.len() {
            return Err(QuantError::Length {
                ty: self.ty,
                elements: qw.len(),
                bytes: out.len(),
            });
        }
        (self.quantize_weighted)(x, qw, out);
        Ok(())
    }

    /// Quantize activations (`x`) as ggml's CPU backend does for dot
    /// products; `out` must be exactly the type's size for `x.len()`.
    pub fn quantize_act(&self, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
        self.check(x.len(), out.len())?;
        (self.quantize_act)(x, out);
        Ok(())
    }

    /// Whether this type can be a matrix operand (has a dot product).
    pub fn has_vec_dot(&self) -> bool {
        self.vec_dot.is_some()
    }

    /// The dot product of one weight row (`w`, this type) with one
    /// activation row (`x`, quantized to `vec_dot_type`), both holding
    /// `n` elements. Panics if the type has no dot product or the lengths
    /// disagree with `n`: callers size these buffers themselves.
    #[inline]
    pub fn vec_dot(&self, n: usize, w: &[u8], x: &[u8]) -> f32 {
        let f = self.vec_dot.expect("type has a dot product");
        assert_eq!(w.len(), n / self.ty.block_len() * self.ty.block_bytes());
        assert_eq!(
            x.len(),
            n / self.vec_dot_type.block_len() * self.vec_dot_type.block_bytes()
        );
        f(w, x)
    }

    /// The fastest tile kernels of this type on this CPU (see
    /// [`crate::cpu::level`]), the scalar ones where no SIMD kernel exists.
    /// Panics if the type has no dot product.
    pub fn tiles(&self) -> DotTiles {
        self.tiles_at(crate::cpu::level())
    }

    /// The tile kernels at `level` (which must not exceed
    /// [`crate::cpu::detected`]), or the scalar ones where that level has
    /// no kernel for this type.
    pub fn tiles_at(&self, level: crate::cpu::Level) -> DotTiles {
        assert!(
            level <= crate::cpu::detected(),
            "{level:?} is not available"
        );
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = crate::x86::kernels(self.ty, level) {
            return t;
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(t) = crate::neon::kernels(self.ty, level) {
            return t;
        }
        let _ = level;
        self.tiles.expect("type has a dot product")
    }

    /// One dot product at `level` (see [`Self::tiles_at`]).
    pub fn dot_at(&self, level: crate::cpu::Level, w: &[u8], x: &[u8]) -> f32 {
        let mut out = [[0.0f32; 1]; 1];
        (self.tiles_at(level).t1x1)(&[w], &[x], &mut out);
        out[0][0]
    }

    /// Dequantize `bytes` into `out`, which must hold exactly the elements
    /// those bytes encode.
    pub fn dequantize(&self, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
        self.check(out.len(), bytes.len())?;
        (self.dequantize)(bytes, out);
        Ok(())
    }
}

fn quantize_erased<T: QuantType>(x: &[f32], out: &mut [u8]) {
    quantize_with::<T>(T::quantize_ref, x, out)
}

fn quantize_weighted_erased<T: QuantType>(x: &[f32], qw: &[f32], out: &mut [u8]) {
    // the whole row at once (ggml's weighted quantizers look at the row)
    let mut blocks = vec![T::Block::default(); out.len() / std::mem::size_of::<T::Block>()];
    T::quantize_row_weighted(x, qw, &mut blocks);
    out.copy_from_slice(blocks_as_bytes(&blocks));
}

fn quantize_act_erased<T: QuantType>(x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::level() >= crate::cpu::Level::Avx2 {
        // SAFETY: the CPU has these features (the level says so).
        return unsafe { quantize_act_avx2::<T>(x, out) };
    }
    quantize_with::<T>(T::quantize_act, x, out)
}

/// The same code compiled for AVX2/FMA/SSE4.1 (rounding inlined instead of
/// libm calls, loops auto-vectorized): identical results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,sse4.1")]
unsafe fn quantize_act_avx2<T: QuantType>(x: &[f32], out: &mut [u8]) {
    quantize_with::<T>(T::quantize_act, x, out)
}

#[inline(always)]
fn quantize_with<T: QuantType>(f: fn(&[f32], &mut [T::Block]), x: &[f32], out: &mut [u8]) {
    let n = out.len() / std::mem::size_of::<T::Block>();
    // Output buffers may be unaligned (e.g. a slice of a byte buffer), so
    // quantize into aligned blocks and copy out in bounded chunks.
    const CHUNK: usize = 64;
    let mut tmp = [T::Block::default(); CHUNK];
    let bl = T::block_len();
    let bb = std::mem::size_of::<T::Block>();
    let mut i = 0;
    while i < n {
        let m = CHUNK.min(n - i);
        f(&x[i * bl..(i + m) * bl], &mut tmp[..m]);
        out[i * bb..(i + m) * bb].copy_from_slice(blocks_as_bytes(&tmp[..m]));
        i += m;
    }
}

fn dequantize_erased<T: QuantType>(bytes: &[u8], out: &mut [f32]) {
    if let Some(blocks) = view_blocks::<T::Block>(bytes) {
        T::dequantize(blocks, out);
        return;
    }
    // Unaligned input (legal in a GGUF with a small alignment): copy first.
    const CHUNK: usize = 64;
    let mut tmp = [T::Block::default(); CHUNK];
    let bl = T::block_len();
    let bb = std::mem::size_of::<T::Block>();
    let n = bytes.len() / bb;
    let mut i = 0;
    while i < n {
        let m = CHUNK.min(n - i);
        blocks_as_bytes_mut(&mut tmp[..m]).copy_from_slice(&bytes[i * bb..(i + m) * bb]);
        T::dequantize(&tmp[..m], &mut out[i * bl..(i + m) * bl]);
        i += m;
    }
}

/// Views bytes as blocks, copying into `tmp` when they are misaligned.
fn blocks_of<'a, B: Block>(bytes: &'a [u8], tmp: &'a mut Vec<B>) -> &'a [B] {
    if let Some(b) = view_blocks::<B>(bytes) {
        return b;
    }
    tmp.clear();
    tmp.resize(bytes.len() / std::mem::size_of::<B>(), B::default());
    blocks_as_bytes_mut(tmp).copy_from_slice(bytes);
    tmp
}

fn vec_dot_erased<T: VecDot>(w: &[u8], x: &[u8]) -> f32 {
    let (mut tw, mut tx) = (Vec::new(), Vec::new());
    let wb = blocks_of::<T::Block>(w, &mut tw);
    let xb = blocks_of::<<T::Act as QuantType>::Block>(x, &mut tx);
    T::vec_dot(wb, xb)
}

/// A row for a storage-only type (no dot product: activation types).
const fn row<T: QuantType>() -> TypeKernels {
    TypeKernels {
        ty: T::TYPE,
        vec_dot_type: T::VEC_DOT_TYPE,
        quantize: quantize_erased::<T>,
        quantize_weighted: quantize_weighted_erased::<T>,
        weighted: T::WEIGHTED,
        quantize_act: quantize_act_erased::<T>,
        dequantize: dequantize_erased::<T>,
        vec_dot: None,
        tiles: None,
    }
}

/// A row for a weight type.
const fn row_dot<T: VecDot>() -> TypeKernels {
    TypeKernels {
        ty: T::TYPE,
        vec_dot_type: <T::Act as QuantType>::TYPE,
        quantize: quantize_erased::<T>,
        quantize_weighted: quantize_weighted_erased::<T>,
        weighted: T::WEIGHTED,
        quantize_act: quantize_act_erased::<T>,
        dequantize: dequantize_erased::<T>,
        vec_dot: Some(vec_dot_erased::<T>),
        tiles: Some(DotTiles {
            t1x1: scalar_1x1::<T>,
            t4x1: scalar_4x1::<T>,
            t2x4: scalar_2x4::<T>,
        }),
    }
}

/// The types we can quantize and dequantize, one row each.
pub static TABLE: &[TypeKernels] = &[
    row_dot::<F32>(),
    row_dot::<F16>(),
    row_dot::<Bf16>(),
    row_dot::<Q4_0>(),
    row_dot::<Q4_1>(),
    row_dot::<Q5_0>(),
    row_dot::<Q5_1>(),
    row_dot::<Q8_0>(),
    row::<Q8_1>(),
    row_dot::<Q4K>(),
    row_dot::<Q5K>(),
    row_dot::<Q6K>(),
    row::<Q8K>(),
];

/// The kernels for `ty`, or `Unsupported`.
pub fn kernels_for(ty: GgmlType) -> Result<&'static TypeKernels, QuantError> {
    TABLE
        .iter()
        .find(|k| k.ty == ty)
        .ok_or(QuantError::Unsupported(ty))
}

/// Dequantize `bytes` of type `ty` into `out`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    kernels_for(ty)?.dequantize(bytes, out)
}

/// Quantize `x` to type `ty` into `out` with ggml's reference quantizer.
pub fn quantize(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    kernels_for(ty)?.quantize(x, out)
}

#[cfg(test)]
mod tests;
