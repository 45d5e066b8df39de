//! The graph executor: runs a model's graph over a batch of tokens with a
//! backend, the block caches, and the positions of the batch. Row counts
//! come from the data (what each subsampler keeps); values are freed after
//! their last use.

use subllm_models::graph::{Node, V};

use crate::backend::Backend;
use crate::error::Result;
use crate::kv::LayerCache;
use crate::model::Model;
use crate::tensor::Mat;

enum Val {
    Empty,
    Mat(Mat),
    Pos(Vec<u32>),
    /// A subsampler's choice: kept row indexes and their weights.
    Sel(Vec<usize>, Vec<f32>),
}

/// What one run produced.
pub struct RunOutput {
    /// Logits of the rows asked for (`rows x n_vocab`).
    pub logits: Mat,
    /// For each region, the absolute positions it kept in this run.
    pub kept: Vec<Vec<u32>>,
}

pub struct RunArgs<'a> {
    pub tokens: &'a [u32],
    /// Absolute position of the first token.
    pub start: usize,
    /// Logits for every row (else only the last).
    pub all_logits: bool,
    /// Use the official code's level >= 2 prefill positions (inference doc,
    /// section 7): only meaningful for a first, whole-prompt prefill.
    pub upstream_nested_positions: bool,
    /// A token is kept at a level iff its score is above this (0: the
    /// trained behaviour). Weights stay `clamp(score, 0, 1)`.
    pub subsample_threshold: f32,
}

struct Env(Vec<Val>);

impl Env {
    fn mat(&self, v: V) -> &Mat {
        match &self.0[v.0] {
            Val::Mat(m) => m,
            _ => unreachable!("value {} is not a matrix", v.0),
        }
    }
    fn pos(&self, v: V) -> &[u32] {
        match &self.0[v.0] {
            Val::Pos(p) => p,
            _ => unreachable!("value {} is not a position vector", v.0),
        }
    }
    /// Moves a matrix out when this node is its last use, else copies it
    /// (into storage from the backend).
    fn take_mat<B: Backend>(&mut self, backend: &B, v: V, last: bool) -> Result<Mat> {
        if last {
            match std::mem::replace(&mut self.0[v.0], Val::Empty) {
                Val::Mat(m) => Ok(m),
                _ => unreachable!("value {} is not a matrix", v.0),
            }
        } else {
            let m = self.mat(v);
            let mut c = backend.zeros(m.rows, m.cols)?;
            c.data.copy_from_slice(&m.data);
            Ok(c)
        }
    }

    /// Frees value `v`, giving a matrix's storage back to the backend.
    fn free<B: Backend>(&mut self, backend: &B, v: usize) {
        if let Val::Mat(m) = std::mem::replace(&mut self.0[v], Val::Empty) {
            backend.recycle(m);
        }
    }
}

pub fn run<B: Backend>(
    backend: &B,
    model: &Model,
    caches: &mut [LayerCache],
    a: &RunArgs,
) -> Result<RunOutput> {
    let g = &model.graph;
    let hp = &model.hparams;
    let mut env = Env((0..g.n_values).map(|_| Val::Empty).collect());
    let pos: Vec<u32> = (a.start..a.start + a.tokens.len())
        .map(|p| p as u32)
        .collect();
    env.0[g.input_rope_pos.0] = Val::Pos(pos.clone());
    env.0[g.input_pos.0] = Val::Pos(pos);
    let first_prefill = a.start == 0 && a.tokens.len() >= 2;
    let mut kept = vec![Vec::new(); hp.structure.n_regions];
    let mut qcache: Option<(usize, subllm_kernels::GgmlType, crate::backend::QuantAct)> = None;

    for (i, node) in g.nodes.iter().enumerate() {
        let last = |v: V| model.drops[i].contains(&v.0);
        let out_val = match node {
            Node::Embed { out, .. } => (
                *out,
                Val::Mat(backend.embed(&model.node_matrix(i), a.tokens)?),
            ),
            Node::RmsNorm { out, x, .. } => (
                *out,
                Val::Mat(backend.rms_norm(env.mat(*x), model.node_vector(i), hp.rms_eps)?),
            ),
            Node::Linear { out, x, bias, .. } => {
                let b = bias.as_ref().map(|_| model.node_vector(i));
                let w = model.node_matrix(i);
                // q/k/v (and gate/up) read one input: quantize it once. Values
                // are written once, so a value id names the same data until
                // it is freed; RoPE, the one in-place op, clears the entry.
                let ty = w.kernels.vec_dot_type;
                let hit = matches!(&qcache, Some((v, t, _)) if *v == x.0 && *t == ty);
                if !hit {
                    let new = (x.0, ty, backend.quantize_act(env.mat(*x), ty)?);
                    if let Some((_, _, old)) = qcache.replace(new) {
                        backend.recycle_act(old);
                    }
                }
                let xq = &qcache.as_ref().expect("just filled").2;
                (*out, Val::Mat(backend.linear_q(xq, &w, b)?))
            }
            Node::Rope { x, pos, head_dim } => {
                if matches!(&qcache, Some((v, _, _)) if *v == x.0) {
                    if let Some((_, _, old)) = qcache.take() {
                        backend.recycle_act(old);
                    }
                }
                let p = env.pos(*pos).to_vec();
                if let Val::Mat(m) = &mut env.0[x.0] {
                    backend.rope(m, &p, *head_dim, hp.rope_base)?;
                }
                continue;
            }
            Node::Attention {
                out,
                q,
                k,
                v,
                pos,
                layer,
            } => {
                let o = backend.attention(
                    env.mat(*q),
                    env.mat(*k),
                    env.mat(*v),
                    env.pos(*pos),
                    &mut caches[*layer],
                    hp.n_head,
                    hp.n_head_kv,
                    hp.head_dim,
                )?;
                (*out, Val::Mat(o))
            }
            Node::SwiGlu { out, gate, up } => (
                *out,
                Val::Mat(backend.swiglu(env.mat(*gate), env.mat(*up))?),
            ),
            Node::Add { out, a: x, b: y } => {
                let mut m = env.take_mat(backend, *x, last(*x))?;
                backend.add(&mut m, env.mat(*y))?;
                (*out, Val::Mat(m))
            }
            Node::Subsample {
                region,
                level,
                x,
                pos,
                rope_pos,
                out_x,
                out_pos,
                out_rope_pos,
                sel,
                ..
            } => {
                let xm = env.mat(*x);
                let s = backend.scores(xm, model.node_vector(i))?;
                // strict: a score equal to the threshold (or NaN) drops the token
                let th = a.subsample_threshold;
                let keep: Vec<usize> = (0..s.len()).filter(|&t| s[t] > th).collect();
                let w: Vec<f32> = keep.iter().map(|&t| s[t].clamp(0.0, 1.0)).collect();
                let sub = backend.gather(xm, &keep)?;
                let p: Vec<u32> = keep.iter().map(|&t| env.pos(*pos)[t]).collect();
                let rp: Vec<u32> = if a.upstream_nested_positions && first_prefill && *level >= 2 {
                    keep.iter().map(|&t| t as u32).collect()
                } else {
                    keep.iter().map(|&t| env.pos(*rope_pos)[t]).collect()
                };
                kept[*region].extend_from_slice(&p);
                env.0[out_x.0] = Val::Mat(sub);
                env.0[out_pos.0] = Val::Pos(p);
                env.0[out_rope_pos.0] = Val::Pos(rp);
                (*sel, Val::Sel(keep, w))
            }
            Node::Upsample {
                out,
                outer,
                inner,
                sel,
                ..
            } => {
                let mut z = env.take_mat(backend, *outer, last(*outer))?;
                let beta = model.node_vector(i);
                let Val::Sel(keep, w) = &env.0[sel.0] else {
                    unreachable!("selection")
                };
                backend.upsample_blend(&mut z, env.mat(*inner), keep, w, beta)?;
                (*out, Val::Mat(z))
            }
            Node::Logits { out, x, .. } => {
                let xm = env.mat(*x);
                let h = if a.all_logits || xm.rows == 0 {
                    backend.rms_norm(xm, model.node_vector(i), hp.rms_eps)?
                } else {
                    let rows = backend.gather(xm, &[xm.rows - 1])?;
                    let h = backend.rms_norm(&rows, model.node_vector(i), hp.rms_eps);
                    backend.recycle(rows);
                    h?
                };
                let logits = backend.linear(&h, &model.node_matrix(i), None);
                backend.recycle(h);
                let logits = logits?;
                (*out, Val::Mat(logits))
            }
        };
        env.0[out_val.0 .0] = out_val.1;
        for &v in &model.drops[i] {
            env.free(backend, v);
        }
    }
    let logits = match std::mem::replace(&mut env.0[g.logits.0], Val::Empty) {
        Val::Mat(m) => m,
        _ => unreachable!("logits are a matrix"),
    };
    if let Some((_, _, old)) = qcache {
        backend.recycle_act(old);
    }
    for v in 0..env.0.len() {
        env.free(backend, v);
    }
    Ok(RunOutput { logits, kept })
}
