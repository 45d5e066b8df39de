//! The GGUF reader: parses and validates the header, metadata and tensor
//! table, then hands out zero-copy views of tensor data.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;
use subllm_kernels::{kernels_for, GgmlType};

use super::value::{MetaArray, MetaValue, ValueType};
use super::{align_up, GgufError, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC};

/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays may nest this deep; deeper is rejected.
pub const MAX_NESTING: usize = 8;
/// Longest tensor name accepted (ggml's own limit is 63).
pub const MAX_TENSOR_NAME: usize = 256;

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data, relative to the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (`dims[0]`, or 1 for a scalar).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (the product of the other dimensions).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

enum Storage {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file.
pub struct GgufFile {
    storage: Storage,
    pub version: u32,
    metadata: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Alignment of the data section and of each tensor's offset.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` and parses it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        // regular files only: a FIFO or device would block in open or never end
        let file = crate::files::open_regular(path).map_err(|e| GgufError::io(path, e))?;
        // SAFETY: the map is read-only and private to this process. The
        // usual caveat of file-backed maps applies: another process
        // truncating or rewriting the file while it is mapped can fault or
        // change bytes under us. Every model loader that maps files accepts
        // this; we never assume the bytes stay valid UTF-8 etc. beyond what
        // was checked at parse time for the values we copied out.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?;
        Self::parse(Storage::Mmap(map))
    }

    /// Parses a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<GgufFile, GgufError> {
        let mut c = Cursor {
            buf: &storage,
            pos: 0,
        };
        let magic = c.bytes(4, "magic")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic(magic.to_vec()));
        }
        let version = c.u32("version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(GgufError::BigEndian);
        }
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;

        // metadata
        let count_at = c.pos;
        let n_kv = c.check_count(n_kv, 8 + 4 + 1, "metadata count", count_at)?;
        let mut metadata = Vec::with_capacity(n_kv);
        let mut index = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.value_type(&key, "metadata value type")?;
            let value = c.value(ty, &key, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let alignment = match index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(MetaValue::U32(a)) => {
                let a = *a as u64;
                if a == 0 || !a.is_power_of_two() {
                    return Err(GgufError::BadAlignment(a));
                }
                a
            }
            Some(v) => {
                return Err(GgufError::WrongType {
                    key: ALIGNMENT_KEY.into(),
                    expected: "u32".into(),
                    found: v.value_type().name().into(),
                })
            }
        };

        // tensor infos
        let count_at = c.pos;
        let min_info = 8 + 4 + 4 + 8; // empty name, no dims, type, offset
        let n_tensors = c.check_count(n_tensors, min_info, "tensor count", count_at)?;
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let info = c.tensor_info(alignment)?;
            if tensor_index
                .insert(info.name.clone(), tensors.len())
                .is_some()
            {
                return Err(GgufError::DuplicateTensor(info.name));
            }
            tensors.push(info);
        }

        let data_offset =
            align_up(c.pos as u64, alignment).ok_or(GgufError::BadAlignment(alignment))?;
        let file_len = storage.len() as u64;
        let data_len = file_len.saturating_sub(data_offset);
        for t in &tensors {
            let end = t.offset.checked_add(t.size);
            match end {
                Some(end) if end <= data_len => {}
                _ => {
                    return Err(GgufError::TensorOutOfBounds {
                        name: t.name.clone(),
                        start: t.offset,
                        end: end.unwrap_or(u64::MAX),
                        len: data_len,
                    })
                }
            }
        }
        let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
        order.sort_by_key(|t| t.offset);
        for w in order.windows(2) {
            if w[0].offset + w[0].size > w[1].offset {
                return Err(GgufError::OverlappingTensors(
                    w[0].name.clone(),
                    w[1].name.clone(),
                ));
            }
        }

        Ok(GgufFile {
            storage,
            version,
            metadata,
            index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The value of `key`, or `MissingKey`.
    pub fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.into()))
    }

    /// A string value, or a typed error.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "string", v))
    }

    /// A non-negative integer value of any width, or a typed error.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| wrong_type(key, "unsigned integer", v))
    }

    /// A float value of either width, or a typed error.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| wrong_type(key, "float", v))
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Where the tensor called `name` is in [`GgufFile::tensors`].
    pub fn tensor_position(&self, name: &str) -> Option<usize> {
        self.tensor_index.get(name).copied()
    }

    /// The raw bytes of a tensor (bounds were checked when parsing).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.storage[start..start + info.size as usize]
    }

    /// Drops the mapped pages holding bytes `from..from + len` of `info`'s
    /// data (clamped to it) from this process's resident set, for bytes
    /// copied elsewhere (e.g. repacked): a later read faults the same file
    /// bytes back in. No-op for files held in memory, and on failure (only
    /// a hint).
    pub fn release_tensor_range(&self, info: &TensorInfo, from: usize, len: usize) {
        if let Storage::Mmap(m) = &self.storage {
            let page = 4096usize;
            let size = info.size as usize;
            let start = (self.data_offset + info.offset) as usize + from.min(size);
            let end = start + len.min(size - from.min(size));
            // whole pages strictly inside the tensor, so no neighbour loses
            // pages it is using (they would fault back in anyway)
            let (a, b) = (start.div_ceil(page) * page, end / page * page);
            if b > a {
                // SAFETY: the map is read-only, private and file-backed:
                // MADV_DONTNEED only drops this process's page-table entries,
                // and any later access reads the same bytes from the file
                // again, so no reference into the map observes a change.
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a)
                };
            }
        }
    }

    /// The raw bytes of the tensor called `name`.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.into()))?;
        Ok((info, self.tensor_data(info)))
    }

    /// The tensor called `name` converted to f32 (allocates n_elements floats).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let (info, bytes) = self.tensor_bytes(name)?;
        let quant = |source| GgufError::Quant {
            name: name.into(),
            source,
        };
        let k = kernels_for(info.ty).map_err(quant)?;
        let mut out = vec![0.0f32; info.n_elements() as usize];
        k.dequantize(bytes, &mut out).map_err(quant)?;
        Ok(out)
    }

    /// Total size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.storage.len() as u64
    }
}

fn wrong_type(key: &str, expected: &str, v: &MetaValue) -> GgufError {
    GgufError::WrongType {
        key: key.into(),
        expected: expected.into(),
        found: v.value_type().name().into(),
    }
}

/// A bounds-checked reader over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() as u64 {
            return Err(GgufError::Truncated {
                what: what.into(),
                offset: self.pos as u64,
                needed: n,
                available: self.remaining() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let b = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit
    /// in what remains, so that allocating `count` slots is bounded by the
    /// file size.
    fn check_count(
        &self,
        count: u64,
        min_size: usize,
        what: &str,
        at: usize,
    ) -> Result<usize, GgufError> {
        let available = self.remaining() as u64;
        if count
            .checked_mul(min_size as u64)
            .is_none_or(|need| need > available)
        {
            return Err(GgufError::CountTooLarge {
                what: what.into(),
                offset: at as u64 - 8,
                count,
                available,
            });
        }
        Ok(count as usize)
    }

    /// A value type id, for the value (or array elements) of `key`.
    fn value_type(&mut self, key: &str, what: &str) -> Result<ValueType, GgufError> {
        let at = self.pos;
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.into(),
            offset: at as u64,
            id,
        })
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let at = self.pos;
        let b = self.bytes(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what.into(),
            offset: at as u64,
        })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<MetaValue, GgufError> {
        let what = || format!("value of '{key}'");
        Ok(match ty {
            ValueType::U8 => MetaValue::U8(self.array::<1>(&what())?[0]),
            ValueType::I8 => MetaValue::I8(self.array::<1>(&what())?[0] as i8),
            ValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(&what())?)),
            ValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(&what())?)),
            ValueType::U32 => MetaValue::U32(u32::from_le_bytes(self.array(&what())?)),
            ValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(&what())?)),
            ValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(&what())?)),
            ValueType::U64 => MetaValue::U64(u64::from_le_bytes(self.array(&what())?)),
            ValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(&what())?)),
            ValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(&what())?)),
            ValueType::Bool => MetaValue::Bool(self.bool(key)?),
            ValueType::String => MetaValue::String(self.string(&what())?),
            ValueType::Array => MetaValue::Array(self.meta_array(key, depth)?),
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool, GgufError> {
        let at = self.pos;
        match self.array::<1>(&format!("value of '{key}'"))?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(GgufError::InvalidBool {
                key: key.into(),
                offset: at as u64,
                value,
            }),
        }
    }

    fn meta_array(&mut self, key: &str, depth: usize) -> Result<MetaArray, GgufError> {
        if depth >= MAX_NESTING {
            return Err(GgufError::NestingTooDeep {
                key: key.into(),
                max: MAX_NESTING,
            });
        }
        let ty = self.value_type(key, "array element type")?;
        let count = self.u64("array length")?;
        let n = self.check_count(
            count,
            ty.min_size(),
            &format!("array length of '{key}'"),
            self.pos,
        )?;
        let what = format!("array '{key}'");

        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const W: usize = std::mem::size_of::<$t>();
                let raw = self.bytes((n * W) as u64, &what)?;
                MetaArray::$variant(
                    raw.chunks_exact(W)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of W bytes")))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            ValueType::U8 => MetaArray::U8(self.bytes(n as u64, &what)?.to_vec()),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(key)?);
                }
                MetaArray::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(&what)?);
                }
                MetaArray::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.meta_array(key, depth + 1)?);
                }
                MetaArray::Array(v)
            }
        })
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo, GgufError> {
        let name_at = self.pos;
        let name_len = self.u64("tensor name length")?;
        if name_len > MAX_TENSOR_NAME as u64 {
            return Err(GgufError::NameTooLong {
                offset: name_at as u64,
                len: name_len,
                max: MAX_TENSOR_NAME,
            });
        }
        self.pos = name_at;
        let name = self.string("tensor name")?;
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                name,
                n_dims,
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        let ty_id = self.u32("tensor type")?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            id: ty_id,
        })?;
        let offset = self.u64("tensor offset")?;

        // ggml counts elements in int64
        let n_elements = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| GgufError::ShapeOverflow {
                name: name.clone(),
                dims: dims.clone(),
            })?;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % ty.block_len() as u64 != 0 {
            return Err(GgufError::RowNotBlockAligned {
                name,
                ne0,
                ty,
                block: ty.block_len(),
            });
        }
        let size = (n_elements / ty.block_len() as u64)
            .checked_mul(ty.block_bytes() as u64)
            .ok_or_else(|| GgufError::ShapeOverflow {
                name: name.clone(),
                dims: dims.clone(),
            })?;
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                name,
                offset,
                alignment,
            });
        }
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size,
        })
    }
}

/// Names that appear more than once (used by writers to reject them early).
pub(crate) fn first_duplicate<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = HashSet::new();
    names.into_iter().find(|n| !seen.insert(*n))
}
