//! The seam between the executor and the hardware. The executor walks the
//! architecture's graph and calls one backend method per op; a backend
//! knows nothing of models. The CPU backend is the reference; a CUDA
//! backend implements the same trait.

pub mod cpu;

use crate::error::Result;
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

/// Every op returns a `Result`: an op whose inputs do not fit (or whose
/// storage cannot be had) is an [`crate::Error::Backend`], never a panic.
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Rows `ids` of the embedding table, as f32.
    fn embed(&self, table: &Weight, ids: &[u32]) -> Result<Mat>;
    fn rms_norm(&self, x: &Mat, gain: &[f32], eps: f32) -> Result<Mat>;
    /// `x W^T (+ bias)`.
    fn linear(&self, x: &Mat, w: &Weight, bias: Option<&[f32]>) -> Result<Mat> {
        let xq = self.quantize_act(x, w.kernels.vec_dot_type)?;
        let out = self.linear_q(&xq, w, bias);
        self.recycle_act(xq);
        out
    }
    /// The rows of `x` quantized to `ty` (a weight type's dot type).
    fn quantize_act(&self, x: &Mat, ty: subllm_kernels::GgmlType) -> Result<QuantAct>;
    /// `x W^T (+ bias)` from rows quantized to `w`'s dot type.
    fn linear_q(&self, x: &QuantAct, w: &Weight, bias: Option<&[f32]>) -> Result<Mat>;
    /// Rotates adjacent pairs of each `head_dim` head of row r by `pos[r]`.
    fn rope(&self, x: &mut Mat, pos: &[u32], head_dim: usize, base: f32) -> Result<()>;
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
    ) -> Result<Mat>;
    fn swiglu(&self, gate: &Mat, up: &Mat) -> Result<Mat>;
    fn add(&self, a: &mut Mat, b: &Mat) -> Result<()>;
    /// `x_t . w` for each row, accumulated in f64: the one point where
    /// values go back to the host (the executor picks the kept rows).
    fn scores(&self, x: &Mat, w: &[f32]) -> Result<Vec<f32>>;
    /// Rows `idx` of `x`, in that order (a subsampler's kept rows; the last
    /// row, for the logits).
    fn gather(&self, x: &Mat, idx: &[usize]) -> Result<Mat>;
    /// The upsampler's blend: row `keep[j]` of `z` (ascending indexes)
    /// moves toward row `j` of `inner`, per channel c, by `w[j] * beta[c]`:
    /// `z += w_j * beta_c * (inner_j - z)`.
    fn upsample_blend(
        &self,
        z: &mut Mat,
        inner: &Mat,
        keep: &[usize],
        w: &[f32],
        beta: &[f32],
    ) -> Result<()>;
    /// A zeroed `rows x cols` matrix, from storage given back by
    /// [`Backend::recycle`] where the backend keeps it.
    fn zeros(&self, rows: usize, cols: usize) -> Result<Mat> {
        Ok(Mat::zeros(rows, cols))
    }
    /// Takes back a matrix the executor is done with, so that later ops
    /// reuse its storage instead of allocating (and faulting in) new pages.
    fn recycle(&self, _m: Mat) {}
    /// Takes back quantized activations likewise.
    fn recycle_act(&self, _a: QuantAct) {}
}
