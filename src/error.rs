//! The engine's errors.

use subllm_kernels::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("architecture '{0}' is not supported (subllm runs 'llama' and 'subllm')")]
    UnsupportedArch(String),
    #[error("bad hyper-parameters: {0}")]
    HParams(String),
    #[error(transparent)]
    Structure(#[from] subllm_models::structure::StructureError),
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("tensor '{name}' has type {ty}, which subllm cannot compute with")]
    UnsupportedType { name: String, ty: GgmlType },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    InvalidToken { id: u32, n_vocab: usize },
    #[error("the context is full: {n_past} + {n_new} tokens exceed n_ctx = {n_ctx}")]
    ContextFull {
        n_past: usize,
        n_new: usize,
        n_ctx: usize,
    },
    #[error("bad session parameters: {0}")]
    Params(String),
    /// An op the backend could not run (shapes that do not fit, storage
    /// it could not get).
    #[error("backend: {0}")]
    Backend(String),
    /// A text or setting `perplexity` cannot score.
    #[error("perplexity: {0}")]
    Perplexity(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
