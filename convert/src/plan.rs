//! The conversion plan: which checkpoint tensor becomes which GGUF tensor,
//! transformed how, stored as which type. Names follow llama.cpp.
//!
//! RoPE: the engine rotates interleaved pairs (llama.cpp's "normal" mode)
//! for every architecture, so q/k rows of rotate-half checkpoints (HF Llama
//! and official SUBLLM alike) are permuted per head here, exactly as
//! llama.cpp's converter does for HF Llama: within each head, output row
//! 2i is input row i and output row 2i+1 is input row i + head_dim/2.

use std::collections::BTreeSet;

use subllm_kernels::GgmlType;
use subllm_models::structure::Structure;

use crate::config::{Kind, ModelConfig};
use crate::error::ConvertError;
use crate::source::Source;

#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    None,
    /// Interleave the two halves of each of `heads` heads (rows of a matrix
    /// or elements of a bias).
    RopePermute {
        heads: u64,
    },
    /// Take rows `start..start+count` (the gate/up halves of SwiGLU's w12).
    Rows {
        start: u64,
        count: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Planned {
    pub name: String,
    /// ggml order: row length first.
    pub dims: Vec<u64>,
    pub source: String,
    pub transform: Transform,
    pub ty: GgmlType,
}

/// The output type requested with --outtype.
pub fn parse_outtype(s: &str) -> Result<GgmlType, ConvertError> {
    let t = match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "q5_0" => GgmlType::Q5_0,
        "q5_1" => GgmlType::Q5_1,
        "q4_k" => GgmlType::Q4K,
        "q6_k" => GgmlType::Q6K,
        _ => return Err(ConvertError::OutType(s.into())),
    };
    Ok(t)
}

/// llama.cpp's `general.file_type` for a file whose matrices are all `t`
/// (from the file type table shared with subllm-quantize).
pub fn file_type(t: GgmlType) -> u32 {
    subllm_gguf::ftype::Ftype::of_uniform(t).map_or(0, |f| f.id())
}

/// The type a matrix with rows of `row` elements gets: the requested one if
/// the row is a whole number of its blocks, else llama.cpp's fallback
/// ([`GgmlType::fallback_for_row`], shared with subllm-quantize).
pub fn matrix_type(want: GgmlType, row: u64) -> GgmlType {
    want.fallback_for_row(row)
}

struct Builder<'a> {
    src: &'a Source,
    out: Vec<Planned>,
    used: BTreeSet<String>,
    want: GgmlType,
}

impl Builder<'_> {
    /// Plans checkpoint tensor `src` (expected PyTorch shape `src_shape`)
    /// as `name` of PyTorch shape `shape`; matrices get the requested type,
    /// vectors stay F32.
    fn add_from(
        &mut self,
        name: String,
        src: &str,
        src_shape: &[u64],
        shape: &[u64],
        transform: Transform,
    ) -> Result<(), ConvertError> {
        let t = self
            .src
            .get(src)
            .ok_or_else(|| ConvertError::MissingTensor { name: src.into() })?;
        if t.shape != src_shape {
            return Err(ConvertError::Shape {
                name: src.into(),
                found: t.shape.clone(),
                expected: src_shape.to_vec(),
            });
        }
        if !matches!(t.dtype.as_str(), "F32" | "F16" | "BF16" | "F64") {
            return Err(ConvertError::UnknownDtype {
                name: src.into(),
                dtype: t.dtype.clone(),
            });
        }
        let dims: Vec<u64> = shape.iter().rev().copied().collect();
        let ty = if dims.len() >= 2 {
            matrix_type(self.want, dims[0])
        } else {
            GgmlType::F32
        };
        self.used.insert(src.into());
        self.out.push(Planned {
            name,
            dims,
            source: src.into(),
            transform,
            ty,
        });
        Ok(())
    }

    fn add(
        &mut self,
        name: String,
        src: &str,
        shape: &[u64],
        transform: Transform,
    ) -> Result<(), ConvertError> {
        self.add_from(name, src, shape, shape, transform)
    }

    fn vector(&mut self, name: String, src: &str, len: u64) -> Result<(), ConvertError> {
        self.add(name, src, &[len], Transform::None)
    }
}

/// Builds the plan for `cfg` over `src`, checking names and shapes.
pub fn plan(cfg: &ModelConfig, src: &Source, want: GgmlType) -> Result<Vec<Planned>, ConvertError> {
    let structure = Structure::parse(&cfg.structure, cfg.layers as usize)?;
    let mut b = Builder {
        src,
        out: Vec::new(),
        used: BTreeSet::new(),
        want,
    };
    let (d, f, v, hd) = (cfg.dim, cfg.ffn, cfg.vocab, cfg.head_dim());
    let kv = cfg.kv_heads * hd;
    let mut ignorable: Vec<String> = Vec::new();
    match cfg.kind {
        Kind::Subllm => {
            b.add(
                "token_embd.weight".into(),
                "decoder.embed_tokens.weight",
                &[v, d],
                Transform::None,
            )?;
            for i in 0..cfg.layers {
                let p = format!("decoder.layers.{i}.");
                let o = format!("blk.{i}.");
                b.vector(
                    format!("{o}attn_norm.weight"),
                    &format!("{p}self_attn_layer_norm.weight"),
                    d,
                )?;
                let rope = Transform::RopePermute { heads: cfg.heads };
                b.add(
                    format!("{o}attn_q.weight"),
                    &format!("{p}self_attn.q_proj.weight"),
                    &[d, d],
                    rope.clone(),
                )?;
                b.add(
                    format!("{o}attn_k.weight"),
                    &format!("{p}self_attn.k_proj.weight"),
                    &[d, d],
                    rope.clone(),
                )?;
                if cfg.qk_bias {
                    b.add(
                        format!("{o}attn_q.bias"),
                        &format!("{p}self_attn.q_proj.bias"),
                        &[d],
                        rope.clone(),
                    )?;
                    b.add(
                        format!("{o}attn_k.bias"),
                        &format!("{p}self_attn.k_proj.bias"),
                        &[d],
                        rope,
                    )?;
                }
                b.add(
                    format!("{o}attn_v.weight"),
                    &format!("{p}self_attn.v_proj.weight"),
                    &[d, d],
                    Transform::None,
                )?;
                b.add(
                    format!("{o}attn_output.weight"),
                    &format!("{p}self_attn.out_proj.weight"),
                    &[d, d],
                    Transform::None,
                )?;
                b.vector(
                    format!("{o}ffn_norm.weight"),
                    &format!("{p}final_layer_norm.weight"),
                    d,
                )?;
                let w12 = format!("{p}feedforward.swiglu.w12.weight");
                let packed = [2 * f, d];
                b.add_from(
                    format!("{o}ffn_gate.weight"),
                    &w12,
                    &packed,
                    &[f, d],
                    Transform::Rows { start: 0, count: f },
                )?;
                b.add_from(
                    format!("{o}ffn_up.weight"),
                    &w12,
                    &packed,
                    &[f, d],
                    Transform::Rows { start: f, count: f },
                )?;
                b.add(
                    format!("{o}ffn_down.weight"),
                    &format!("{p}feedforward.swiglu.w3.weight"),
                    &[d, f],
                    Transform::None,
                )?;
                let inv = format!("{p}self_attn.position.inv_freq");
                if let Some(t) = src.get(&inv) {
                    if t.shape != [hd / 2] {
                        return Err(ConvertError::Shape {
                            name: inv,
                            found: t.shape.clone(),
                            expected: vec![hd / 2],
                        });
                    }
                }
                ignorable.push(inv);
            }
            for k in 0..structure.n_regions {
                let scorer = format!("decoder.downsamplers.{k}.to_scores.weight");
                // a [1, d] matrix stored as a vector, so always F32
                b.add_from(
                    format!("sub.{k}.score.weight"),
                    &scorer,
                    &[1, d],
                    &[d],
                    Transform::None,
                )?;
                let bypass = structure.bypass_of_region[k];
                b.vector(
                    format!("sub.{k}.bypass.weight"),
                    &format!("decoder.bypasses.{bypass}.bypass_scale"),
                    d,
                )?;
            }
            b.vector("output_norm.weight".into(), "decoder.layer_norm.weight", d)?;
            if cfg.tied {
                ignorable.push("decoder.output_projection.weight".into());
            } else {
                b.add(
                    "output.weight".into(),
                    "decoder.output_projection.weight",
                    &[v, d],
                    Transform::None,
                )?;
            }
        }
        Kind::HfLlama => {
            b.add(
                "token_embd.weight".into(),
                "model.embed_tokens.weight",
                &[v, d],
                Transform::None,
            )?;
            for i in 0..cfg.layers {
                let p = format!("model.layers.{i}.");
                let o = format!("blk.{i}.");
                b.vector(
                    format!("{o}attn_norm.weight"),
                    &format!("{p}input_layernorm.weight"),
                    d,
                )?;
                b.add(
                    format!("{o}attn_q.weight"),
                    &format!("{p}self_attn.q_proj.weight"),
                    &[d, d],
                    Transform::RopePermute { heads: cfg.heads },
                )?;
                b.add(
                    format!("{o}attn_k.weight"),
                    &format!("{p}self_attn.k_proj.weight"),
                    &[kv, d],
                    Transform::RopePermute {
                        heads: cfg.kv_heads,
                    },
                )?;
                b.add(
                    format!("{o}attn_v.weight"),
                    &format!("{p}self_attn.v_proj.weight"),
                    &[kv, d],
                    Transform::None,
                )?;
                b.add(
                    format!("{o}attn_output.weight"),
                    &format!("{p}self_attn.o_proj.weight"),
                    &[d, d],
                    Transform::None,
                )?;
                b.vector(
                    format!("{o}ffn_norm.weight"),
                    &format!("{p}post_attention_layernorm.weight"),
                    d,
                )?;
                b.add(
                    format!("{o}ffn_gate.weight"),
                    &format!("{p}mlp.gate_proj.weight"),
                    &[f, d],
                    Transform::None,
                )?;
                b.add(
                    format!("{o}ffn_up.weight"),
                    &format!("{p}mlp.up_proj.weight"),
                    &[f, d],
                    Transform::None,
                )?;
                b.add(
                    format!("{o}ffn_down.weight"),
                    &format!("{p}mlp.down_proj.weight"),
                    &[d, f],
                    Transform::None,
                )?;
                ignorable.push(format!("{p}self_attn.rotary_emb.inv_freq"));
            }
            b.vector("output_norm.weight".into(), "model.norm.weight", d)?;
            if cfg.tied {
                ignorable.push("lm_head.weight".into());
            } else {
                b.add(
                    "output.weight".into(),
                    "lm_head.weight",
                    &[v, d],
                    Transform::None,
                )?;
            }
        }
    }
    let unexpected: Vec<&str> = src
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !b.used.contains(*n) && !ignorable.iter().any(|i| i == n))
        .collect();
    if !unexpected.is_empty() {
        let mut list = unexpected
            .iter()
            .take(10)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if unexpected.len() > 10 {
            list += &format!(", ... ({} in all)", unexpected.len());
        }
        return Err(ConvertError::UnexpectedTensors(list));
    }
    Ok(b.out)
}

/// Applies a transform to a tensor loaded as f32 (row-major, PyTorch shape).
pub fn apply(t: &Transform, data: Vec<f32>, row_len: usize) -> Vec<f32> {
    match *t {
        Transform::None => data,
        Transform::Rows { start, count } => {
            let (s, c) = (start as usize * row_len, count as usize * row_len);
            data[s..s + c].to_vec()
        }
        Transform::RopePermute { heads } => {
            let heads = heads as usize;
            let rows = data.len() / row_len;
            let hd = rows / heads;
            let mut out = vec![0.0f32; data.len()];
            for h in 0..heads {
                for i in 0..hd / 2 {
                    for (dst, src) in [(2 * i, i), (2 * i + 1, hd / 2 + i)] {
                        let (o, s) = ((h * hd + dst) * row_len, (h * hd + src) * row_len);
                        out[o..o + row_len].copy_from_slice(&data[s..s + row_len]);
                    }
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_interleaves_each_heads_halves() {
        // 2 heads of 4 rows, rows of 1 element: values are the input row index
        let data: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let out = apply(&Transform::RopePermute { heads: 2 }, data, 1);
        assert_eq!(out, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }

    #[test]
    fn fallback_types() {
        assert_eq!(matrix_type(GgmlType::Q4K, 512), GgmlType::Q4K);
        assert_eq!(matrix_type(GgmlType::Q4K, 64), GgmlType::Q5_0);
        assert_eq!(matrix_type(GgmlType::Q6K, 96), GgmlType::Q8_0);
        assert_eq!(matrix_type(GgmlType::Q4_0, 48), GgmlType::F16);
        assert_eq!(matrix_type(GgmlType::F32, 7), GgmlType::F32);
    }
}
