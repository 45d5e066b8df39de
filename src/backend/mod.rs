//! The seam between the executor and the hardware. The executor walks the
//! architecture's graph and calls one backend method per op; a backend
//! knows nothing of models. The CPU backend is the reference; a CUDA
//! backend implements the same trait.

pub mod cpu;

use crate::kv::LayerCache;
use crate::model::Weight;
use crate::tensor::Mat;

/// Activation rows quantized once to a weight type's dot type, so that
/// several matrices reading the same input (q/k/v, gate/up) share them.
pub struct QuantAct {
    pub ty: subllm_kernels::GgmlType,
    pub rows: usize,
    pub row_bytes: usize,
    pub data: Vec<u8>,
    /// For Q8_0 rows: the exact sum of each block's levels (packed kernels).
    pub sums: Vec<i32>,
}

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Rows `ids` of the embedding table, as f32.
    fn embed(&self, table: &Weight, ids: &[u32]) -> Mat;
    fn rms_norm(&self, x: &Mat, gain: &[f32], eps: f32) -> Mat;
    /// `x W^T (+ bias)`.
    fn linear(&self, x: &Mat, w: &Weight, bias: Option<&[f32]>) -> Mat {
        let xq = self.quantize_act(x, w.kernels.vec_dot_type);
        self.linear_q(&xq, w, bias)
    }
    /// The rows of `x` quantized to `ty` (a weight type's dot type).
    fn quantize_act(&self, x: &Mat, ty: subllm_kernels::GgmlType) -> QuantAct;
    /// `x W^T (+ bias)` from rows quantized to `w`'s dot type.
    fn linear_q(&self, x: &QuantAct, w: &Weight, bias: Option<&[f32]>) -> Mat;
    /// Rotates adjacent pairs of each `head_dim` head of row r by `pos[r]`.
    fn rope(&self, x: &mut Mat, pos: &[u32], head_dim: usize, base: f32);
    /// Appends k, v (rows at `pos`) to `cache`, then causal attention of q
    /// over the whole cache: new row r sees old rows and new rows <= r.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Mat,
        k: &Mat,
        v: &Mat,
        pos: &[u32],
        cache: &mut LayerCache,
        n_head: usize,
        n_head_kv: usize,
        head_dim: usize,
    ) -> Mat;
    fn swiglu(&self, gate: &Mat, up: &Mat) -> Mat;
    fn add(&self, a: &mut Mat, b: &Mat);
    /// `x_t . w` for each row, accumulated in f64.
    fn scores(&self, x: &Mat, w: &[f32]) -> Vec<f32>;
    /// A zeroed `rows x cols` matrix, from storage given back by
    /// [`Backend::recycle`] where the backend keeps it.
    fn zeros(&self, rows: usize, cols: usize) -> Mat {
        Mat::zeros(rows, cols)
    }
    /// Takes back a matrix the executor is done with, so that later ops
    /// reuse its storage instead of allocating (and faulting in) new pages.
    fn recycle(&self, _m: Mat) {}
    /// Takes back quantized activations likewise.
    fn recycle_act(&self, _a: QuantAct) {}
}
