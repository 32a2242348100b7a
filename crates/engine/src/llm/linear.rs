//! The linear-layer seam of the decoder: a [`Linear`] is a weight matrix applied as `x @ Wᵀ`,
//! whichever kernel computes it (our integer CPU kernels or candle's matmul, see
//! [`Matrix`](super::weights::Matrix); candle's `QMatMul` on any device, see
//! [`DeviceMatrix`]). [`Fused`] applies several matrices to one input (q/k/v, gate/up),
//! stacked into one matrix where their formats allow, for every kind of matrix alike.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Tensor};

use super::qlinear::QLinear;
use super::weights::Matrix;

/// A weight matrix for `x @ Wᵀ`: `[tokens, in]` activations to `[tokens, out]`.
pub trait Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>;
}

impl Linear for Matrix {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Matrix::Int8(linear) => linear.forward(x),
            Matrix::Candle(m) => m.forward(x),
        }
    }
}

/// A matrix on any candle device for `x @ Wᵀ` that takes and returns activations of any dtype
/// (quantized matrices compute in f32, dense ones in their own dtype).
pub struct DeviceMatrix(pub(super) QMatMul);

impl Linear for DeviceMatrix {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let wants = match &self.0 {
            QMatMul::QTensor(_) => DType::F32,
            QMatMul::Tensor(w) | QMatMul::TensorF16(w) => w.dtype(),
        };
        self.0.forward(&x.to_dtype(wants)?)?.to_dtype(x.dtype())
    }
}

/// Matrices applied to one input: stacked into one at load where their formats allow (the
/// input is then quantized once and the kernel dispatched once), else kept apart.
pub enum Fused<M> {
    Joined { matrix: M, widths: Vec<usize> },
    Apart(Vec<M>),
}

impl<M: Linear> Fused<M> {
    /// One output per part, in order.
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Fused::Joined { matrix, widths } => {
                let all = matrix.forward(x)?;
                let mut start = 0;
                let mut outs = Vec::with_capacity(widths.len());
                for &w in widths {
                    outs.push(all.narrow(1, start, w)?.contiguous()?);
                    start += w;
                }
                Ok(outs)
            }
            Fused::Apart(parts) => parts.iter().map(|m| m.forward(x)).collect(),
        }
    }
}

/// The CPU kernels' fused matrices: integer-kernel matrices join into one.
impl Fused<Matrix> {
    pub(super) fn new(parts: Vec<Matrix>) -> Self {
        let int8: Vec<&QLinear> = parts
            .iter()
            .filter_map(|m| match m {
                Matrix::Int8(q) => Some(q),
                Matrix::Candle(_) => None,
            })
            .collect();
        if int8.len() == parts.len() {
            if let Some(matrix) = QLinear::concat(&int8) {
                let widths = int8.iter().map(|q| q.rows()).collect();
                let matrix = Matrix::Int8(matrix);
                return Fused::Joined { matrix, widths };
            }
        }
        Fused::Apart(parts)
    }
}
