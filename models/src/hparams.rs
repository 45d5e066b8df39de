//! Hyper-parameters of a decoder, independent of the file they came from.

use crate::structure::Structure;

#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub n_ctx_train: usize,
    /// Block layout; a Llama is all `T`.
    pub structure: Structure,
    /// Whether q and k have biases (SUBLLM's `qk_bias`).
    pub qk_bias: bool,
    /// Whether the output projection is the embedding table.
    pub tied_output: bool,
}

impl HParams {
    pub fn n_layer(&self) -> usize {
        self.structure.n_blocks
    }
    /// Width of a K or V cache row.
    pub fn kv_width(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}
