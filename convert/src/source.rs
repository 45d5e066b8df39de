//! Where weights come from: safetensors (single or sharded) or PyTorch zip
//! checkpoints. A source lists tensor names, shapes and dtypes without
//! loading them, and loads one tensor at a time as f32.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::ConvertError;
use crate::pickle::{self, StorageType, TensorRef};
use crate::zip::ZipIndex;

/// A tensor as the checkpoint describes it (PyTorch order: rows last-but-one).
#[derive(Debug, Clone)]
pub struct SourceTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: String,
}

impl SourceTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

enum Location {
    Safetensors {
        file: usize,
        start: usize,
        end: usize,
    },
    Torch(TensorRef),
}

/// The bytes of one weight file: mapped from disk, or owned (a checkpoint
/// handed over in memory, as the fuzz targets do).
enum Bytes {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An opened set of weight files.
pub struct Source {
    maps: Vec<(PathBuf, Bytes)>,
    tensors: Vec<SourceTensor>,
    locations: BTreeMap<String, Location>,
    zip: Option<ZipIndex>,
    zip_prefix: String,
}

fn map(path: &Path) -> Result<Bytes, ConvertError> {
    let f = crate::open_regular(path)?;
    // SAFETY: read-only private map of a checkpoint the user named; see
    // GgufFile::open for the caveat about files changed while mapped.
    let m = unsafe { Mmap::map(&f) }.map_err(|e| ConvertError::io(path, e))?;
    Ok(Bytes::Map(m))
}

/// Decodes little-endian elements of `dtype` into f32.
pub fn to_f32(dtype: &str, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), String> {
    match dtype {
        "F32" => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        "F16" => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        "BF16" => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        "F64" => out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32),
        ),
        other => return Err(format!("dtype {other}")),
    }
    Ok(())
}

fn dtype_size(dtype: &str) -> Option<usize> {
    match dtype {
        "F32" => Some(4),
        "F16" | "BF16" => Some(2),
        "F64" => Some(8),
        _ => None,
    }
}

impl Source {
    fn empty(zip_prefix: String) -> Source {
        Source {
            maps: Vec::new(),
            tensors: Vec::new(),
            locations: BTreeMap::new(),
            zip: None,
            zip_prefix,
        }
    }

    /// Opens safetensors files (shards are merged by name).
    pub fn safetensors(paths: &[PathBuf]) -> Result<Source, ConvertError> {
        let mut src = Source::empty(String::new());
        for path in paths {
            src.add_safetensors(path.clone(), map(path)?)?;
        }
        Ok(src)
    }

    /// A safetensors file already in memory; `name` is what errors call it.
    pub fn safetensors_from_bytes(name: &str, bytes: Vec<u8>) -> Result<Source, ConvertError> {
        let mut src = Source::empty(String::new());
        src.add_safetensors(PathBuf::from(name), Bytes::Owned(bytes))?;
        Ok(src)
    }

    fn add_safetensors(&mut self, path: PathBuf, m: Bytes) -> Result<(), ConvertError> {
        let fi = self.maps.len();
        let (header_len, meta) =
            safetensors::SafeTensors::read_metadata(&m).map_err(|e| ConvertError::Safetensors {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        let base = 8 + header_len;
        let mut infos: Vec<(String, _)> = meta.tensors().into_iter().collect();
        infos.sort_by_key(|(_, i)| i.data_offsets.0);
        for (name, info) in infos {
            if self.locations.contains_key(&name) {
                return Err(ConvertError::Safetensors {
                    path: path.clone(),
                    msg: format!("tensor '{name}' appears in more than one shard"),
                });
            }
            let (s, e) = info.data_offsets;
            self.tensors.push(SourceTensor {
                name: name.clone(),
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                dtype: format!("{:?}", info.dtype),
            });
            self.locations.insert(
                name.clone(),
                Location::Safetensors {
                    file: fi,
                    start: base + s,
                    end: base + e,
                },
            );
        }
        self.maps.push((path, m));
        Ok(())
    }

    /// Opens a PyTorch zip checkpoint (`torch.save`), possibly `{"model": sd}`.
    pub fn torch(path: &Path) -> Result<Source, ConvertError> {
        Source::torch_bytes(path.to_path_buf(), map(path)?)
    }

    /// A PyTorch zip checkpoint already in memory; `name` is what errors call it.
    pub fn torch_from_bytes(name: &str, bytes: Vec<u8>) -> Result<Source, ConvertError> {
        Source::torch_bytes(PathBuf::from(name), Bytes::Owned(bytes))
    }

    fn torch_bytes(path: PathBuf, m: Bytes) -> Result<Source, ConvertError> {
        let zip = ZipIndex::new(&m)?;
        let pkl = zip
            .names()
            .iter()
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .cloned()
            .ok_or_else(|| {
                ConvertError::BadZip(
                    "no <name>/data.pkl entry: not a torch.save zip checkpoint".into(),
                )
            })?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let dict = pickle::load_state_dict(zip.read(&m, &pkl)?)?;
        let mut src = Source::empty(prefix);
        for (name, t) in dict {
            let dtype = match t.dtype {
                StorageType::F32 => "F32",
                StorageType::F16 => "F16",
                StorageType::BF16 => "BF16",
                StorageType::F64 => "F64",
            };
            if src.locations.contains_key(&name) {
                return Err(ConvertError::BadPickle(format!(
                    "key '{name}' appears twice"
                )));
            }
            src.tensors.push(SourceTensor {
                name: name.clone(),
                shape: t.shape.clone(),
                dtype: dtype.into(),
            });
            src.locations.insert(name, Location::Torch(t));
        }
        src.zip = Some(zip);
        src.maps.push((path, m));
        Ok(src)
    }

    pub fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&SourceTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Loads tensor `name` as f32 in row-major (C) order.
    pub fn load(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let info = self
            .get(name)
            .ok_or_else(|| ConvertError::MissingTensor { name: name.into() })?;
        let bad = |msg: String| ConvertError::BadTensor {
            name: name.into(),
            msg,
        };
        let unknown = || ConvertError::UnknownDtype {
            name: name.into(),
            dtype: info.dtype.clone(),
        };
        let esize = dtype_size(&info.dtype).ok_or_else(unknown)?;
        let numel = usize::try_from(info.numel()).map_err(|_| bad("too many elements".into()))?;
        if numel == 0 {
            // nothing to read (and no view to check against its storage)
            return Ok(Vec::new());
        }
        let out = match &self.locations[name] {
            Location::Safetensors { file, start, end } => {
                let bytes = &self.maps[*file].1[*start..*end];
                if bytes.len() != numel * esize {
                    return Err(bad(format!("{} bytes for {numel} elements", bytes.len())));
                }
                let mut out = Vec::with_capacity(numel);
                to_f32(&info.dtype, bytes, &mut out).map_err(|_| unknown())?;
                out
            }
            Location::Torch(t) => {
                let zip = self.zip.as_ref().expect("torch sources have a zip index");
                let storage = zip.read(
                    &self.maps[0].1,
                    &format!("{}data/{}", self.zip_prefix, t.storage_key),
                )?;
                let n_storage = (storage.len() / esize) as u64;
                // a view can repeat elements (stride 0) and so describe far
                // more than its file holds; a state dict never needs that
                if numel as u64 > n_storage {
                    return Err(bad(format!(
                        "a view of {numel} elements over a storage of {n_storage}"
                    )));
                }
                let mut out = Vec::with_capacity(numel);
                // the largest element index the view touches must lie in the storage
                if numel > 0 {
                    let mut last = t.offset;
                    for (&d, &s) in t.shape.iter().zip(&t.stride) {
                        last = (d - 1)
                            .checked_mul(s)
                            .and_then(|x| x.checked_add(last))
                            .ok_or_else(|| bad("view overflows".into()))?;
                    }
                    if last >= n_storage {
                        return Err(bad(format!(
                            "view reaches element {last} of a storage of {n_storage}"
                        )));
                    }
                }
                let contiguous = {
                    let mut expect = 1u64;
                    let mut ok = true;
                    for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
                        if d != 1 && s != expect {
                            ok = false;
                        }
                        expect *= d;
                    }
                    ok
                };
                if contiguous {
                    let s = t.offset as usize * esize;
                    to_f32(&info.dtype, &storage[s..s + numel * esize], &mut out)
                        .map_err(|_| unknown())?;
                } else {
                    let mut idx = vec![0u64; t.shape.len()];
                    let mut one = Vec::with_capacity(1);
                    for _ in 0..numel {
                        let e =
                            t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
                        let s = e as usize * esize;
                        one.clear();
                        to_f32(&info.dtype, &storage[s..s + esize], &mut one)
                            .map_err(|_| unknown())?;
                        out.push(one[0]);
                        for k in (0..idx.len()).rev() {
                            idx[k] += 1;
                            if idx[k] < t.shape[k] {
                                break;
                            }
                            idx[k] = 0;
                        }
                    }
                }
                out
            }
        };
        Ok(out)
    }
}
