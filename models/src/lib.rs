//! Model architectures for subllm (Llama and SUBLLM) as compute graphs.
//! Nothing here knows about SIMD or file formats.

pub mod decoder;
pub mod graph;
pub mod hparams;
pub mod structure;

pub use graph::{Graph, Node, V};
pub use hparams::HParams;
