//! Everything that can stop a conversion, each saying what and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Structure(#[from] subllm_models::structure::StructureError),
    #[error("{path}: not a valid safetensors file: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("zip archive: {0}")]
    BadZip(String),
    #[error("pickle: {0}")]
    BadPickle(String),
    #[error("{0}")]
    NoWeights(String),
    #[error(
        "tensor '{name}' has dtype {dtype}; only F32, F16, BF16 and F64 weights can be converted"
    )]
    UnknownDtype { name: String, dtype: String },
    #[error("tensor '{name}' is missing from the checkpoint")]
    MissingTensor { name: String },
    #[error("unexpected tensors in the checkpoint: {0}")]
    UnexpectedTensors(String),
    #[error("tensor '{name}' has shape {found:?}, but the config implies {expected:?}")]
    Shape {
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("tensor '{name}' data is invalid: {msg}")]
    BadTensor { name: String, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("unknown --outtype {0:?}")]
    OutType(String),
    #[error("the converted file would not load, so it was not written: {0}")]
    Unloadable(String),
    #[error(transparent)]
    Gguf(#[from] subllm_gguf::GgufError),
    #[error(transparent)]
    Quant(#[from] subllm_kernels::QuantError),
}

impl ConvertError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConvertError::Io {
            path: path.into(),
            source,
        }
    }
}
