//! The graph executor: runs a model's graph over a batch of tokens with a
//! backend, the block caches, and the positions of the batch. Row counts
//! come from the data (what each subsampler keeps); values are given back
//! to the backend after their last use. The host-side state of a run (value
//! slots, positions, kept sets) lives in a [`RunCtx`] that a session keeps,
//! so that a run after the first allocates nothing.

use subllm_models::graph::{Node, V};

use crate::backend::Backend;
use crate::error::Result;
use crate::model::Model;

/// One graph value. A value id names one kind of value, so each slot
/// keeps its host vectors' storage from run to run.
struct Slot<T> {
    tensor: Option<T>,
    /// Positions (position vectors).
    pos: Vec<u32>,
    /// A subsampler's choice: kept row indexes and their weights.
    keep: Vec<usize>,
    weights: Vec<f32>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            tensor: None,
            pos: Vec::new(),
            keep: Vec::new(),
            weights: Vec::new(),
        }
    }
}

/// A run's host-side state, kept between runs for its storage.
pub struct RunCtx<B: Backend> {
    slots: Vec<Slot<B::Tensor>>,
    /// For each region, the absolute positions it kept in the last run.
    pub kept: Vec<Vec<u32>>,
    scores: Vec<f32>,
    /// The input quantized for the last matmul (value id, type), for the
    /// next matmul reading the same input.
    qcache: Option<(usize, subllm_kernels::GgmlType, B::QuantAct)>,
}

impl<B: Backend> RunCtx<B> {
    pub fn new(model: &Model) -> RunCtx<B> {
        RunCtx {
            slots: (0..model.graph.n_values).map(|_| Slot::default()).collect(),
            kept: vec![Vec::new(); model.hparams.structure.n_regions],
            scores: Vec::new(),
            qcache: None,
        }
    }

    fn tensor(&self, v: V) -> &B::Tensor {
        self.slots[v.0]
            .tensor
            .as_ref()
            .unwrap_or_else(|| unreachable!("value {} is not a live tensor", v.0))
    }

    fn pos(&self, v: V) -> &[u32] {
        &self.slots[v.0].pos
    }

    /// Moves a tensor out when this node is its last use, else copies it.
    fn take_tensor(&mut self, backend: &B, v: V, last: bool) -> Result<B::Tensor> {
        if last {
            Ok(self.slots[v.0]
                .tensor
                .take()
                .unwrap_or_else(|| unreachable!("value {} is not a live tensor", v.0)))
        } else {
            backend.copy(self.tensor(v))
        }
    }

    /// Gives value `v`'s tensor (if any) back to the backend.
    fn free(&mut self, backend: &B, v: usize) {
        if let Some(t) = self.slots[v].tensor.take() {
            backend.recycle(t);
        }
    }

    fn drop_qcache(&mut self, backend: &B) {
        if let Some((_, _, old)) = self.qcache.take() {
            backend.recycle_act(old);
        }
    }

    /// Gives every live value back (after a run, or one that failed).
    fn clear(&mut self, backend: &B) {
        self.drop_qcache(backend);
        for v in 0..self.slots.len() {
            self.free(backend, v);
        }
    }
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

/// Runs the graph over `a.tokens`, appending the logits of the rows asked
/// for (`rows x n_vocab`, row-major) to `logits`; `ctx.kept` then holds
/// each region's kept positions.
pub fn run<B: Backend>(
    backend: &B,
    model: &Model,
    weights: &B::Weights,
    caches: &mut [B::Cache],
    ctx: &mut RunCtx<B>,
    a: &RunArgs,
    logits: &mut Vec<f32>,
) -> Result<()> {
    let r = run_graph(backend, model, weights, caches, ctx, a, logits);
    ctx.clear(backend);
    r
}

fn run_graph<B: Backend>(
    backend: &B,
    model: &Model,
    weights: &B::Weights,
    caches: &mut [B::Cache],
    ctx: &mut RunCtx<B>,
    a: &RunArgs,
    logits: &mut Vec<f32>,
) -> Result<()> {
    let g = &model.graph;
    let hp = &model.hparams;
    let positions = (a.start..a.start + a.tokens.len()).map(|p| p as u32);
    for v in [g.input_rope_pos, g.input_pos] {
        let p = &mut ctx.slots[v.0].pos;
        p.clear();
        p.extend(positions.clone());
    }
    let first_prefill = a.start == 0 && a.tokens.len() >= 2;
    for k in &mut ctx.kept {
        k.clear();
    }

    // the node folded into the one before it (see `Node::Linear`)
    let mut fused = None;
    for (i, node) in g.nodes.iter().enumerate() {
        let last = |v: V| model.drops[i].contains(&v.0);
        if fused == Some(i) {
            for &v in &model.drops[i] {
                ctx.free(backend, v);
            }
            continue;
        }
        let (out, value) = match node {
            Node::Embed { out, .. } => (*out, backend.embed(&model.node_matrix(i), a.tokens)?),
            Node::RmsNorm { out, x, .. } => (
                *out,
                backend.rms_norm(ctx.tensor(*x), model.node_vector(i), hp.rms_eps)?,
            ),
            Node::Linear { out, x, bias, .. } => {
                let b = bias.as_ref().map(|_| model.node_vector(i));
                let w = model.node_matrix(i);
                // q/k/v (and gate/up) read one input: quantize it once. Values
                // are written once, so a value id names the same data until
                // it is freed; RoPE, the one in-place op, clears the entry.
                let ty = w.kernels.vec_dot_type;
                let hit = matches!(&ctx.qcache, Some((v, t, _)) if *v == x.0 && *t == ty);
                if !hit {
                    let q = backend.quantize_act(ctx.tensor(*x), ty)?;
                    ctx.drop_qcache(backend);
                    ctx.qcache = Some((x.0, ty, q));
                }
                // an up projection whose only reader is the SwiGLU right
                // after it, on a gate read nowhere else: one op, so the up
                // matrix is never held whole (the SwiGLU node is skipped)
                let dies = |v: &V| model.drops.get(i + 1).is_some_and(|d| d.contains(&v.0));
                let fold = match (b, g.nodes.get(i + 1)) {
                    (None, Some(Node::SwiGlu { out: h, gate, up }))
                        if up == out
                            && dies(gate)
                            && dies(up)
                            && ctx.slots[gate.0].tensor.is_some() =>
                    {
                        Some((*h, *gate))
                    }
                    _ => None,
                };
                match fold {
                    Some((h, gate)) => {
                        let mut gm = ctx.take_tensor(backend, gate, true)?;
                        let xq = &ctx.qcache.as_ref().expect("just filled").2;
                        if let Err(e) = backend.linear_q_swiglu(xq, &w, weights, &mut gm) {
                            backend.recycle(gm);
                            return Err(e);
                        }
                        fused = Some(i + 1);
                        (h, gm)
                    }
                    None => {
                        let xq = &ctx.qcache.as_ref().expect("just filled").2;
                        (*out, backend.linear_q(xq, &w, weights, b)?)
                    }
                }
            }
            Node::Rope { x, pos, head_dim } => {
                if matches!(&ctx.qcache, Some((v, _, _)) if *v == x.0) {
                    ctx.drop_qcache(backend);
                }
                let (xs, ps) = (&mut ctx.slots, pos.0);
                let p = std::mem::take(&mut xs[ps].pos);
                let r = match xs[x.0].tensor.as_mut() {
                    Some(m) => backend.rope(m, &p, *head_dim, hp.rope_base),
                    None => unreachable!("value {} is not a live tensor", x.0),
                };
                xs[ps].pos = p;
                r?;
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
                    ctx.tensor(*q),
                    ctx.tensor(*k),
                    ctx.tensor(*v),
                    ctx.pos(*pos),
                    &mut caches[*layer],
                    hp.n_head,
                    hp.n_head_kv,
                    hp.head_dim,
                )?;
                (*out, o)
            }
            Node::SwiGlu { out, gate, up } => {
                let mut m = ctx.take_tensor(backend, *gate, last(*gate))?;
                if let Err(e) = backend.swiglu(&mut m, ctx.tensor(*up)) {
                    backend.recycle(m);
                    return Err(e);
                }
                (*out, m)
            }
            Node::Add { out, a: x, b: y } => {
                let mut m = ctx.take_tensor(backend, *x, last(*x))?;
                let r = backend.add(&mut m, ctx.tensor(*y));
                if let Err(e) = r {
                    backend.recycle(m);
                    return Err(e);
                }
                (*out, m)
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
                let mut s = std::mem::take(&mut ctx.scores);
                let r = backend.scores(ctx.tensor(*x), model.node_vector(i), &mut s);
                ctx.scores = s;
                r?;
                // strict: a score equal to the threshold (or NaN) drops the token
                let th = a.subsample_threshold;
                let mut keep = std::mem::take(&mut ctx.slots[sel.0].keep);
                let mut w = std::mem::take(&mut ctx.slots[sel.0].weights);
                keep.clear();
                keep.extend((0..ctx.scores.len()).filter(|&t| ctx.scores[t] > th));
                w.clear();
                w.extend(keep.iter().map(|&t| ctx.scores[t].clamp(0.0, 1.0)));
                let sub = backend.gather(ctx.tensor(*x), &keep);
                let upstream = a.upstream_nested_positions && first_prefill && *level >= 2;
                for (src, dst, upstream) in [
                    (*pos, *out_pos, false),
                    (*rope_pos, *out_rope_pos, upstream),
                ] {
                    let mut p = std::mem::take(&mut ctx.slots[dst.0].pos);
                    p.clear();
                    if upstream {
                        p.extend(keep.iter().map(|&t| t as u32));
                    } else {
                        let from = ctx.pos(src);
                        p.extend(keep.iter().map(|&t| from[t]));
                    }
                    ctx.slots[dst.0].pos = p;
                }
                ctx.kept[*region].extend_from_slice(&ctx.slots[out_pos.0].pos);
                ctx.slots[sel.0].keep = keep;
                ctx.slots[sel.0].weights = w;
                (*out_x, sub?)
            }
            Node::Upsample {
                out,
                outer,
                inner,
                sel,
                ..
            } => {
                let mut z = ctx.take_tensor(backend, *outer, last(*outer))?;
                let s = &ctx.slots[sel.0];
                let r = backend.upsample_blend(
                    &mut z,
                    ctx.tensor(*inner),
                    &s.keep,
                    &s.weights,
                    model.node_vector(i),
                );
                if let Err(e) = r {
                    backend.recycle(z);
                    return Err(e);
                }
                (*out, z)
            }
            Node::Logits { out, x, .. } => {
                let xm = ctx.tensor(*x);
                let rows = backend.rows(xm);
                let h = if a.all_logits || rows == 0 {
                    backend.rms_norm(xm, model.node_vector(i), hp.rms_eps)?
                } else {
                    let last_row = backend.gather(xm, &[rows - 1])?;
                    let h = backend.rms_norm(&last_row, model.node_vector(i), hp.rms_eps);
                    backend.recycle(last_row);
                    h?
                };
                let l = backend.linear(&h, &model.node_matrix(i), weights, None);
                backend.recycle(h);
                (*out, l?)
            }
        };
        if let Some(old) = ctx.slots[out.0].tensor.replace(value) {
            backend.recycle(old);
        }
        for &v in &model.drops[i] {
            ctx.free(backend, v);
        }
    }
    backend.read(ctx.tensor(g.logits), logits)
}
