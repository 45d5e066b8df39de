//! Everything that can be wrong with a GGUF file, each naming where.

use std::path::PathBuf;

use subllm_kernels::{GgmlType, QuantError};

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: the first bytes are {0:02x?}, not \"GGUF\"")]
    BadMagic(Vec<u8>),
    #[error("GGUF version {0} is not supported (subllm reads versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("file truncated: {what} at byte {offset} needs {needed} bytes, {available} remain")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error(
        "{what} at byte {offset}: count {count} cannot fit in the {available} bytes that remain"
    )]
    CountTooLarge {
        what: String,
        offset: u64,
        count: u64,
        available: u64,
    },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("metadata key '{key}' at byte {offset}: unknown value type {id}")]
    UnknownValueType { key: String, offset: u64, id: u32 },
    #[error("metadata key '{key}' at byte {offset}: bool value {value} is neither 0 nor 1")]
    InvalidBool { key: String, offset: u64, value: u8 },
    #[error("metadata key '{key}': arrays nested deeper than {max} levels")]
    NestingTooDeep { key: String, max: usize },
    #[error("metadata key '{0}' appears twice")]
    DuplicateKey(String),
    #[error("metadata key '{key}': expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: String,
        found: String,
    },
    #[error("metadata key '{0}' is missing")]
    MissingKey(String),
    #[error("general.alignment = {0} is not a non-zero power of two")]
    BadAlignment(u64),
    #[error("tensor name at byte {offset} is {len} bytes long (at most {max} allowed)")]
    NameTooLong { offset: u64, len: u64, max: usize },
    #[error("tensor '{name}': {n_dims} dimensions (at most {max})")]
    TooManyDims {
        name: String,
        n_dims: u32,
        max: usize,
    },
    #[error("tensor '{name}': unknown tensor type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor '{name}': shape {dims:?} has too many elements")]
    ShapeOverflow { name: String, dims: Vec<u64> },
    #[error("tensor '{name}': row length {ne0} is not a multiple of {ty}'s block of {block}")]
    RowNotBlockAligned {
        name: String,
        ne0: u64,
        ty: GgmlType,
        block: usize,
    },
    #[error(
        "tensor '{name}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error(
        "tensor '{name}': data bytes [{start}, {end}) lie outside the {len}-byte data section"
    )]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("tensor name '{0}' appears twice")]
    DuplicateTensor(String),
    #[error("tensors '{0}' and '{1}' overlap in the data section")]
    OverlappingTensors(String, String),
    #[error("no tensor named '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}': {source}")]
    Quant {
        name: String,
        #[source]
        source: QuantError,
    },
    #[error("writer: {0}")]
    Writer(String),
}

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}
