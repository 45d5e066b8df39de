//! Importance matrices in llama.cpp's GGUF imatrix format (what
//! `llama-imatrix` writes): per weight tensor `NAME`, an F32 tensor
//! `NAME.in_sum2` of summed squared activations and an F32 tensor
//! `NAME.counts` (one count per expert), plus the metadata keys
//! `imatrix.datasets`, `imatrix.chunk_count` and `imatrix.chunk_size`.
//! The importance of column j is `in_sum2[j] / count` (1 where nothing
//! was counted), as llama-quantize computes it. The file is treated as
//! hostile: the GGUF reader checks its structure, this module its meaning.

use std::collections::BTreeMap;
use std::path::Path;

use subllm_gguf::{GgufFile, MetaArray, MetaValue};
use subllm_kernels::GgmlType;

use crate::QuantizeError;

/// A loaded importance matrix.
#[derive(Clone, Debug, Default)]
pub struct Imatrix {
    /// Importance per weight tensor: `dims[0]` values per expert.
    pub entries: BTreeMap<String, Vec<f32>>,
    /// The datasets it was computed on (`imatrix.datasets`).
    pub datasets: Vec<String>,
    /// `imatrix.chunk_count`.
    pub chunk_count: u32,
    /// The path it was read from, as given.
    pub file: String,
}

fn bad(path: &Path, why: impl Into<String>) -> QuantizeError {
    QuantizeError::Imatrix {
        path: path.into(),
        why: why.into(),
    }
}

impl Imatrix {
    /// Reads an imatrix GGUF file.
    pub fn load(path: &Path) -> Result<Imatrix, QuantizeError> {
        let f = GgufFile::open(path).map_err(|e| match e {
            subllm_gguf::GgufError::BadMagic(_) => bad(
                path,
                "not a GGUF imatrix (the legacy .dat format is not read: \
                 llama-imatrix --output-format gguf writes the GGUF one)",
            ),
            subllm_gguf::GgufError::Io { source, .. } => bad(path, source.to_string()),
            e => bad(path, e.to_string()),
        })?;
        let datasets = match f.get("imatrix.datasets") {
            Some(MetaValue::Array(MetaArray::String(v))) => v.clone(),
            Some(_) => return Err(bad(path, "imatrix.datasets is not an array of strings")),
            None => return Err(bad(path, "missing imatrix metadata (imatrix.datasets)")),
        };
        let chunk = |key: &str| match f.get(key) {
            Some(MetaValue::U32(n)) => Ok(*n),
            Some(_) => Err(bad(path, format!("{key} is not a u32"))),
            None => Err(bad(path, format!("missing imatrix metadata ({key})"))),
        };
        let chunk_count = chunk("imatrix.chunk_count")?;
        chunk("imatrix.chunk_size")?;

        let f32s = |name: &str| -> Result<Option<Vec<f32>>, QuantizeError> {
            let Some(t) = f.tensor_info(name) else {
                return Ok(None);
            };
            if t.ty != GgmlType::F32 {
                return Err(bad(path, format!("{name} is {}, not F32", t.ty.name())));
            }
            let data = f.tensor_data(t);
            Ok(Some(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ))
        };
        let mut entries = BTreeMap::new();
        for t in f.tensors() {
            let Some(name) = t.name.strip_suffix(".in_sum2") else {
                if let Some(name) = t.name.strip_suffix(".counts") {
                    if f.tensor_info(&format!("{name}.in_sum2")).is_none() {
                        return Err(bad(path, format!("{} has no matching .in_sum2", t.name)));
                    }
                }
                continue;
            };
            let sums = f32s(&t.name)?.expect("listed");
            let counts = f32s(&format!("{name}.counts"))?
                .ok_or_else(|| bad(path, format!("{} has no matching .counts", t.name)))?;
            if counts.is_empty() || sums.len() % counts.len() != 0 {
                return Err(bad(
                    path,
                    format!(
                        "{name}: {} sums do not divide into {} experts",
                        sums.len(),
                        counts.len()
                    ),
                ));
            }
            let ne0 = sums.len() / counts.len();
            let mut e = vec![0.0f32; sums.len()];
            for (j, &c) in counts.iter().enumerate() {
                // llama.cpp rounds the stored count to an integer first
                let count = if c.is_finite() { c.round() } else { 0.0 };
                for i in 0..ne0 {
                    e[j * ne0 + i] = if count > 0.0 {
                        sums[j * ne0 + i] / count
                    } else {
                        1.0
                    };
                }
            }
            if let Some(v) = e.iter().find(|v| !v.is_finite()) {
                return Err(bad(path, format!("{name}: non-finite importance {v}")));
            }
            entries.insert(name.to_string(), e);
        }
        Ok(Imatrix {
            entries,
            datasets,
            chunk_count,
            file: path.to_string_lossy().into_owned(),
        })
    }

    /// The metadata llama-quantize records in a file quantized with an
    /// importance matrix (strings cut to 127 bytes, as it does).
    pub fn metadata(&self) -> Vec<(&'static str, MetaValue)> {
        let cut = |s: &str| {
            let mut n = s.len().min(127);
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            s[..n].to_string()
        };
        let mut m = vec![("quantize.imatrix.file", MetaValue::String(cut(&self.file)))];
        if let Some(d) = self.datasets.first() {
            m.push(("quantize.imatrix.dataset", MetaValue::String(cut(d))));
        }
        m.push((
            "quantize.imatrix.entries_count",
            MetaValue::U32(self.entries.len() as u32),
        ));
        if self.chunk_count > 0 {
            m.push((
                "quantize.imatrix.chunks_count",
                MetaValue::U32(self.chunk_count),
            ));
        }
        m
    }
}
