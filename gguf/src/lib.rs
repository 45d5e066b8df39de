//! GGUF, the single-file model format of ggml and llama.cpp: our own reader
//! (zero-copy over an mmap, every number from the file checked before use)
//! and a streaming writer producing deterministic v3 files.
//!
//! Layout (little-endian): magic `GGUF`, version u32, tensor count u64,
//! metadata count u64, the metadata key/values, the tensor infos, padding to
//! `general.alignment` (default 32), then the tensor data section. Tensor
//! offsets are relative to the data section and aligned.
//!
//! Also here, for every tool that writes model files (the converter,
//! subllm-quantize) without pulling in the engine: llama.cpp's file types
//! ([`ftype`]), output files written atomically ([`outfile`]) and bounded
//! reads of regular files ([`files`]).

mod error;
pub mod files;
pub mod ftype;
pub mod outfile;
mod reader;
mod value;
mod writer;

pub use error::GgufError;
pub use reader::{GgufFile, TensorInfo, MAX_DIMS, MAX_NESTING, MAX_TENSOR_NAME};
pub use value::{MetaArray, MetaValue, ValueType};
pub use writer::{GgufWriter, TensorDataWriter};

/// The 4 magic bytes at the start of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version this writer produces.
pub const VERSION: u32 = 3;
/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Rounds `x` up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}
