//! The GGUF writer: metadata and the tensor table are declared first, the
//! header is written, then tensor data streams through in declaration order,
//! so a model never has to sit in memory whole. Output is deterministic:
//! keys and tensors in insertion order, zero padding.

use std::io::Write;

use subllm_kernels::GgmlType;

use super::reader::{first_duplicate, MAX_DIMS, MAX_TENSOR_NAME};
use super::value::{MetaArray, MetaValue};
use super::{align_up, GgufError, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, VERSION};

struct PlannedTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    offset: u64,
    size: u64,
}

/// Collects metadata and tensor declarations for one file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PlannedTensor>,
    data_size: u64,
}

fn err(msg: impl Into<String>) -> GgufError {
    GgufError::Writer(msg.into())
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (replacing an earlier value of the same key in place).
    pub fn set(&mut self, key: impl Into<String>, value: MetaValue) -> Result<(), GgufError> {
        let key = key.into();
        if key == ALIGNMENT_KEY && !self.tensors.is_empty() {
            return Err(err(
                "general.alignment must be set before tensors are added",
            ));
        }
        if key == ALIGNMENT_KEY {
            match value {
                MetaValue::U32(a) if a != 0 && a.is_power_of_two() => {}
                _ => return Err(err("general.alignment must be a u32 power of two")),
            }
        }
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
        Ok(())
    }

    pub fn set_str(
        &mut self,
        key: impl Into<String>,
        v: impl Into<String>,
    ) -> Result<(), GgufError> {
        self.set(key, MetaValue::String(v.into()))
    }

    pub fn set_u32(&mut self, key: impl Into<String>, v: u32) -> Result<(), GgufError> {
        self.set(key, MetaValue::U32(v))
    }

    pub fn set_f32(&mut self, key: impl Into<String>, v: f32) -> Result<(), GgufError> {
        self.set(key, MetaValue::F32(v))
    }

    /// Whether `key` has been set.
    pub fn has(&self, key: &str) -> bool {
        self.metadata.iter().any(|(k, _)| k == key)
    }

    pub fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == ALIGNMENT_KEY)
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Declares a tensor (dims in ggml order, row length first).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<(), GgufError> {
        let name = name.into();
        if name.len() > MAX_TENSOR_NAME {
            return Err(err(format!(
                "tensor name '{name}' is longer than {MAX_TENSOR_NAME} bytes"
            )));
        }
        if dims.len() > MAX_DIMS {
            return Err(err(format!(
                "tensor '{name}' has more than {MAX_DIMS} dimensions"
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor(name));
        }
        let n: u64 = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| err(format!("tensor '{name}' shape overflows")))?;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % ty.block_len() as u64 != 0 {
            return Err(err(format!(
                "tensor '{name}': row length {ne0} is not a multiple of {ty}'s block of {}",
                ty.block_len()
            )));
        }
        let size = (n / ty.block_len() as u64) * ty.block_bytes() as u64;
        let offset = align_up(self.data_size, self.alignment())
            .ok_or_else(|| err("data section overflows"))?;
        self.data_size = offset + size;
        self.tensors.push(PlannedTensor {
            name,
            dims: dims.to_vec(),
            ty,
            offset,
            size,
        });
        Ok(())
    }

    /// Writes the header, metadata and tensor table to `out` and returns the
    /// writer that takes the tensor data.
    pub fn begin<W: Write>(self, mut out: W) -> Result<TensorDataWriter<W>, GgufError> {
        if let Some(d) = first_duplicate(self.metadata.iter().map(|(k, _)| k.as_str())) {
            return Err(GgufError::DuplicateKey(d.into()));
        }
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut h, k);
            h.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut h, v);
        }
        for t in &self.tensors {
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ty.id().to_le_bytes());
            h.extend_from_slice(&t.offset.to_le_bytes());
        }
        let alignment = self.alignment();
        let padded = align_up(h.len() as u64, alignment).ok_or_else(|| err("header too large"))?;
        h.resize(padded as usize, 0);
        let io = |e| GgufError::io("<output>", e);
        out.write_all(&h).map_err(io)?;
        Ok(TensorDataWriter {
            out,
            tensors: self.tensors,
            next: 0,
            written_in_tensor: 0,
            pos: 0,
        })
    }
}

/// Takes tensor data, in declaration order, after the header.
pub struct TensorDataWriter<W: Write> {
    out: W,
    tensors: Vec<PlannedTensor>,
    next: usize,
    written_in_tensor: u64,
    /// Bytes written into the data section so far.
    pos: u64,
}

impl<W: Write> TensorDataWriter<W> {
    /// The name of the tensor whose data is expected next, if any.
    pub fn next_tensor(&self) -> Option<&str> {
        self.tensors.get(self.next).map(|t| t.name.as_str())
    }

    fn write_raw(&mut self, b: &[u8]) -> Result<(), GgufError> {
        self.out
            .write_all(b)
            .map_err(|e| GgufError::io("<output>", e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Appends a chunk of the current tensor's data; the tensor is complete
    /// once its declared size has been written. Chunks may not cross tensors.
    pub fn write_chunk(&mut self, name: &str, bytes: &[u8]) -> Result<(), GgufError> {
        let Some(t) = self.tensors.get(self.next) else {
            return Err(err(format!(
                "tensor '{name}' written after all declared tensors"
            )));
        };
        if t.name != name {
            return Err(err(format!(
                "expected data for tensor '{}', got '{name}'",
                t.name
            )));
        }
        let (offset, size) = (t.offset, t.size);
        if self.written_in_tensor == 0 && self.pos < offset {
            let pad = vec![0u8; (offset - self.pos) as usize];
            self.write_raw(&pad)?;
        }
        if self.written_in_tensor + bytes.len() as u64 > size {
            return Err(err(format!(
                "tensor '{name}': {} bytes written, {size} declared",
                self.written_in_tensor + bytes.len() as u64
            )));
        }
        self.write_raw(bytes)?;
        self.written_in_tensor += bytes.len() as u64;
        if self.written_in_tensor == size {
            self.next += 1;
            self.written_in_tensor = 0;
        }
        Ok(())
    }

    /// Writes the whole data of the next tensor.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), GgufError> {
        if self.written_in_tensor != 0 {
            return Err(err(format!(
                "tensor '{name}' started before the previous one ended"
            )));
        }
        match self.tensors.get(self.next) {
            Some(t) if t.size != bytes.len() as u64 => Err(err(format!(
                "tensor '{name}': {} bytes given, {} declared",
                bytes.len(),
                t.size
            ))),
            Some(t) if t.size == 0 => {
                self.next += 1;
                Ok(())
            }
            _ => self.write_chunk(name, bytes),
        }
    }

    /// Checks that every tensor was written, flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W, GgufError> {
        while let Some(t) = self.tensors.get(self.next) {
            if t.size != 0 {
                return Err(err(format!(
                    "tensor '{}' was declared but not written",
                    t.name
                )));
            }
            self.next += 1;
        }
        self.out.flush().map_err(|e| GgufError::io("<output>", e))?;
        Ok(self.out)
    }
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => h.push(*x),
        MetaValue::I8(x) => h.push(*x as u8),
        MetaValue::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => h.push(*x as u8),
        MetaValue::String(s) => put_str(h, s),
        MetaValue::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(a) => put_array(h, a),
    }
}

fn put_array(h: &mut Vec<u8>, a: &MetaArray) {
    h.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    h.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                h.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        MetaArray::U8(v) => h.extend_from_slice(v),
        MetaArray::I8(v) => each!(v),
        MetaArray::U16(v) => each!(v),
        MetaArray::I16(v) => each!(v),
        MetaArray::U32(v) => each!(v),
        MetaArray::I32(v) => each!(v),
        MetaArray::F32(v) => each!(v),
        MetaArray::U64(v) => each!(v),
        MetaArray::I64(v) => each!(v),
        MetaArray::F64(v) => each!(v),
        MetaArray::Bool(v) => h.extend(v.iter().map(|&b| b as u8)),
        MetaArray::String(v) => v.iter().for_each(|s| put_str(h, s)),
        MetaArray::Array(v) => v.iter().for_each(|x| put_array(h, x)),
    }
}
