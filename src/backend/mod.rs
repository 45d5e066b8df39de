//! The seam between the executor and the hardware. The executor walks the
//! architecture's graph and calls one backend method per op; a backend
//! knows nothing of models. The CPU backend is the reference; a device
//! backend implements the same trait with its own types.
//!
//! A backend owns its data: the activations ([`Backend::Tensor`]), the
//! activations quantized for a matmul ([`Backend::QuantAct`]), the KV
//! caches ([`Backend::Cache`]) and a model's matrices made ready once
//! ([`Backend::Weights`]: repacked for the SIMD kernels on the CPU). A
//! backend value is one session's context: its threads and the scratch
//! storage its ops reuse from run to run. Values come back to the host in
//! two documented places only: a subsampler's scores
//! ([`Backend::scores`]) and the logits ([`Backend::read`]).

pub mod cpu;

use crate::error::Result;
use crate::kv::KvType;
use crate::model::{Model, Weight};

/// One block's KV cache, as the session sees it: rows in position order.
pub trait KvCache: Send {
    /// Cached rows.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Absolute positions of the cached rows (ascending).
    fn positions(&self) -> &[u32];
    /// Bytes holding cached keys and values.
    fn bytes(&self) -> usize;
    /// Drops every row from `n` on (the storage stays for reuse).
    fn truncate(&mut self, n: usize);
}

/// Every op returns a `Result`: an op whose inputs do not fit (or whose
/// storage cannot be had) is an [`crate::Error::Backend`], never a panic,
/// and leaves its in-place operands as they were.
pub trait Backend: Send + Sync {
    /// A `rows x cols` matrix of f32 activations in the backend's memory.
    type Tensor: Send + Sync;
    /// Activation rows quantized to a weight type's dot type, so that
    /// several matrices reading one input (q/k/v, gate/up) share them.
    type QuantAct: Send + Sync;
    /// One block's KV cache.
    type Cache: KvCache;
    /// A model's matrices made ready for this backend, once per model and
    /// shared by every session on it (see [`Model::prepared`]).
    type Weights: Send + Sync + 'static;

    fn name(&self) -> &'static str;
    /// Runs `f` (an executor run) where this backend's ops can split
    /// (inside a rayon pool's `install`, say).
    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }
    /// This backend's form of `model`'s matrices (cheap: the CPU backend
    /// repacks each matrix at its first use, so loading stays a map).
    fn prepare(&self, model: &Model) -> Result<Self::Weights>;
    /// An empty cache for rows of `width` values, with room reserved for
    /// `reserve_rows` rows (growth within it never moves the rows).
    fn new_cache(&self, ty: KvType, width: usize, reserve_rows: usize) -> Result<Self::Cache>;

    /// Rows of `t`.
    fn rows(&self, t: &Self::Tensor) -> usize;
    /// Appends the values of `t`, row-major, to `out` (the logits' way
    /// back to the host).
    fn read(&self, t: &Self::Tensor, out: &mut Vec<f32>) -> Result<()>;
    /// A copy of `t` (for a value read again after an in-place op).
    fn copy(&self, t: &Self::Tensor) -> Result<Self::Tensor>;

    /// Rows `ids` of the embedding table, as f32.
    fn embed(&self, table: &Weight, ids: &[u32]) -> Result<Self::Tensor>;
    fn rms_norm(&self, x: &Self::Tensor, gain: &[f32], eps: f32) -> Result<Self::Tensor>;
    /// The rows of `x` quantized to `ty` (a weight type's dot type).
    fn quantize_act(
        &self,
        x: &Self::Tensor,
        ty: subllm_kernels::GgmlType,
    ) -> Result<Self::QuantAct>;
    /// `x W^T (+ bias)` from rows quantized to `w`'s dot type; `prepared`
    /// is this backend's form of the model `w` belongs to.
    fn linear_q(
        &self,
        x: &Self::QuantAct,
        w: &Weight,
        prepared: &Self::Weights,
        bias: Option<&[f32]>,
    ) -> Result<Self::Tensor>;
    /// `x W^T (+ bias)`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Weight,
        prepared: &Self::Weights,
        bias: Option<&[f32]>,
    ) -> Result<Self::Tensor> {
        let xq = self.quantize_act(x, w.kernels.vec_dot_type)?;
        let out = self.linear_q(&xq, w, prepared, bias);
        self.recycle_act(xq);
        out
    }
    /// Rotates adjacent pairs of each `head_dim` head of row r by `pos[r]`.
    fn rope(&self, x: &mut Self::Tensor, pos: &[u32], head_dim: usize, base: f32) -> Result<()>;
    /// Appends k, v (rows at `pos`) to `cache`, then causal attention of q
    /// over the whole cache: new row r sees old rows and new rows <= r.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        pos: &[u32],
        cache: &mut Self::Cache,
        n_head: usize,
        n_head_kv: usize,
        head_dim: usize,
    ) -> Result<Self::Tensor>;
    /// `gate = SiLU(gate) * up`, elementwise, in place.
    fn swiglu(&self, gate: &mut Self::Tensor, up: &Self::Tensor) -> Result<()>;
    /// `gate = SiLU(gate) * (x W^T)`: [`Backend::linear_q`] then
    /// [`Backend::swiglu`] in one op, so that a backend can apply the
    /// activation to each piece of the product as it is made and never hold
    /// the whole `up` matrix (the default does the two ops). The same values
    /// as the two ops.
    fn linear_q_swiglu(
        &self,
        x: &Self::QuantAct,
        w: &Weight,
        prepared: &Self::Weights,
        gate: &mut Self::Tensor,
    ) -> Result<()> {
        linear_then_swiglu(self, x, w, prepared, gate)
    }
    fn add(&self, a: &mut Self::Tensor, b: &Self::Tensor) -> Result<()>;
    /// `x_t . w` for each row, accumulated in f64, into `out` (cleared
    /// first): the one point where activations go back to the host (the
    /// executor picks the kept rows).
    fn scores(&self, x: &Self::Tensor, w: &[f32], out: &mut Vec<f32>) -> Result<()>;
    /// Rows `idx` of `x`, in that order (a subsampler's kept rows; the last
    /// row, for the logits).
    fn gather(&self, x: &Self::Tensor, idx: &[usize]) -> Result<Self::Tensor>;
    /// The upsampler's blend: row `keep[j]` of `z` (ascending indexes)
    /// moves toward row `j` of `inner`, per channel c, by `w[j] * beta[c]`:
    /// `z += w_j * beta_c * (inner_j - z)`.
    fn upsample_blend(
        &self,
        z: &mut Self::Tensor,
        inner: &Self::Tensor,
        keep: &[usize],
        w: &[f32],
        beta: &[f32],
    ) -> Result<()>;
    /// Takes back a value the executor is done with, so that later ops
    /// reuse its storage instead of allocating (and faulting in) new pages.
    fn recycle(&self, t: Self::Tensor);
    /// Takes back quantized activations likewise.
    fn recycle_act(&self, a: Self::QuantAct);
}

/// [`Backend::linear_q_swiglu`] as its two ops: the default, and a
/// backend's way where it has no fused form for a matrix.
pub(crate) fn linear_then_swiglu<B: Backend + ?Sized>(
    b: &B,
    x: &B::QuantAct,
    w: &Weight,
    prepared: &B::Weights,
    gate: &mut B::Tensor,
) -> Result<()> {
    let up = b.linear_q(x, w, prepared, None)?;
    let r = b.swiglu(gate, &up);
    b.recycle(up);
    r
}
