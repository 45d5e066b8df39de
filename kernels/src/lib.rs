//! Kernels for subllm: ggml-compatible quantization blocks and (later)
//! SIMD and CUDA compute kernels. Nothing here knows about models.

// Kernels walk several arrays in lockstep with one index, mirroring the
// block layouts; iterator chains would hide that correspondence.
#![allow(clippy::needless_range_loop)]

pub mod attn;
pub mod cpu;
pub mod fp;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod pool;
pub mod quant;
pub mod repack;
#[cfg(test)]
mod simd_tests;
pub mod types;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_512;

pub use quant::{
    dequantize, kernels_for, quantize, Block, QuantError, QuantType, TypeKernels, VecDot,
};
pub use types::GgmlType;

/// Declares that a `#[repr(C)]` block struct is plain data of exactly the
/// ggml size for its type (checked at compile time).
macro_rules! ggml_block {
    ($block:ty, $ty:expr) => {
        const _: () = assert!(::std::mem::size_of::<$block>() == $ty.block_bytes());
        // SAFETY: the struct is #[repr(C)], built only from integer and
        // half-float fields (every bit pattern valid), and the assert above
        // proves its size equals the sum of its fields, so it has no padding.
        unsafe impl $crate::quant::Block for $block {}
    };
}
pub(crate) use ggml_block;
