//! subllm: an inference engine for SUBLLM and Llama-family models.
//!
//! Data flows one way: file -> [`gguf`] loader (mmap, validate) -> weights
//! -> the architecture's graph -> executor -> kernels -> logits -> sampler.

pub mod backend;
#[cfg(feature = "chat")]
pub mod chat;
#[cfg(feature = "cli")]
pub mod cli_args;
pub mod error;
pub mod exec;
pub mod generate;
pub mod kv;
pub mod model;
pub mod npy;
pub mod perplexity;
pub mod rng;
pub mod sampler;
pub mod session;
pub mod tensor;
pub mod tokenizer;

pub use error::{Error, Result};
pub use kv::KvType;
pub use model::{LoadParams, Model};
pub use session::{Logits, Session, SessionParams, Stats};

pub use subllm_gguf as gguf;
pub use subllm_gguf::{files, outfile};
pub use subllm_kernels as kernels;
pub use subllm_kernels::GgmlType;
