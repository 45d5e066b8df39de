//! Model architectures for subllm (Llama and SUBLLM). Nothing here knows
//! about SIMD or file formats.

pub mod structure;
