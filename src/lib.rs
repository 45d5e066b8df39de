//! subllm: an inference engine for SUBLLM and Llama-family models.
//!
//! Data flows one way: file -> [`gguf`] loader (mmap, validate) -> weights
//! -> the architecture's graph -> executor -> kernels -> logits -> sampler.

pub mod gguf;
pub mod npy;

pub use subllm_kernels as kernels;
pub use subllm_kernels::GgmlType;
