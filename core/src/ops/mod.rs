//! The normalised operator set. Each family lives in its own file with its parameters, shape
//! inference, ONNX import and export; this file only ties the families together.

pub mod activation;
pub mod conv;
pub mod dense;
pub mod eltwise;
pub mod layout;
pub mod pool;
pub mod reduce;
pub mod resize;

pub use activation::Activation;
pub use conv::{Conv, ConvTranspose};
pub use dense::{Gemm, MatMul};
pub use eltwise::{BatchNorm, Binary, BinaryKind};
pub use layout::{Concat, Reshape, Transpose};
pub use pool::{Pool, PoolKind};
pub use reduce::{Reduce, ReduceKind, Softmax};
pub use resize::{CoordMode, NearestMode, Resize, ResizeMode};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::onnx::proto::AttributeProto;
use crate::rows::{Fold, RowMap};
use crate::tensor::Tensor;

/// An operator after import and normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// 2-D convolution (batch norm folded in, activation fused).
    Conv(Conv),
    /// 2-D transposed convolution.
    ConvTranspose(ConvTranspose),
    /// Max or average pooling.
    Pool(Pool),
    /// Mean over H and W per channel.
    GlobalAvgPool,
    /// Standalone batch norm as a per-channel affine map.
    BatchNorm(BatchNorm),
    /// Standalone activation.
    Unary(Activation),
    /// Broadcasting arithmetic.
    Binary(Binary),
    /// Concatenation.
    Concat(Concat),
    /// Reshape / Flatten / Squeeze / Unsqueeze of an activation.
    Reshape(Reshape),
    /// Axis permutation.
    Transpose(Transpose),
    /// Spatial resize.
    Resize(Resize),
    /// Gemm.
    Gemm(Gemm),
    /// MatMul.
    MatMul(MatMul),
    /// Reduction over axes.
    Reduce(Reduce),
    /// Softmax.
    Softmax(Softmax),
    /// Copies a constant into an activation buffer (for constant inputs of ops that read only
    /// activations, such as Concat).
    Materialize,
}

/// What an input slot of an op may be bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputRole {
    /// An activation in the arena.
    Activation,
    /// A constant (weights): uploaded once.
    Weight,
    /// Either.
    Either,
}

impl Op {
    /// Short operator name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::Pool(p) => match p.kind {
                PoolKind::Max => "MaxPool",
                PoolKind::Avg => "AveragePool",
            },
            Op::GlobalAvgPool => "GlobalAveragePool",
            Op::BatchNorm(_) => "BatchNorm",
            Op::Unary(a) => a.onnx_name(),
            Op::Binary(b) => b.kind.onnx_name(),
            Op::Concat(_) => "Concat",
            Op::Reshape(_) => "Reshape",
            Op::Transpose(_) => "Transpose",
            Op::Resize(_) => "Resize",
            Op::Gemm(_) => "Gemm",
            Op::MatMul(_) => "MatMul",
            Op::Reduce(r) => r.kind.onnx_name(),
            Op::Softmax(_) => "Softmax",
            Op::Materialize => "Materialize",
        }
    }

    /// Name plus the parameters that matter when reading a plan.
    pub fn describe(&self) -> String {
        let base = match self {
            Op::Conv(c) => format!(
                "Conv {}x{}/{}{}{}{}",
                c.kernel[0],
                c.kernel[1],
                c.strides[0],
                if c.groups > 1 { format!(" g{}", c.groups) } else { String::new() },
                if c.dilations != [1, 1] { format!(" d{}", c.dilations[0]) } else { String::new() },
                if c.residual { "+Add" } else { "" },
            ),
            Op::ConvTranspose(c) => {
                format!("ConvTranspose {}x{}/{}", c.kernel[0], c.kernel[1], c.strides[0])
            }
            Op::Pool(p) => {
                format!("{} {}x{}/{}", self.name(), p.kernel[0], p.kernel[1], p.strides[0])
            }
            _ => self.name().to_string(),
        };
        match self.act() {
            Some(a) => format!("{base}+{}", a.onnx_name()),
            None => base,
        }
    }

    /// The fused activation, if any.
    pub fn act(&self) -> Option<Activation> {
        match self {
            Op::Conv(c) => c.act,
            Op::ConvTranspose(c) => c.act,
            Op::BatchNorm(b) => b.act,
            Op::Binary(b) => b.act,
            Op::Gemm(g) => g.act,
            Op::MatMul(m) => m.act,
            _ => None,
        }
    }

    /// Where an activation may be fused into this op (`None` if this op takes no epilogue).
    pub fn act_slot(&mut self) -> Option<&mut Option<Activation>> {
        match self {
            Op::Conv(c) => Some(&mut c.act),
            Op::ConvTranspose(c) => Some(&mut c.act),
            Op::BatchNorm(b) => Some(&mut b.act),
            Op::Binary(b) => Some(&mut b.act),
            Op::Gemm(g) => Some(&mut g.act),
            Op::MatMul(m) => Some(&mut m.act),
            _ => None,
        }
    }

    /// What input `slot` may be bound to.
    pub fn input_role(&self, slot: usize) -> InputRole {
        match self {
            Op::Conv(c) if c.residual && slot == 3 => InputRole::Activation,
            Op::Conv(_) | Op::ConvTranspose(_) | Op::BatchNorm(_) | Op::Gemm(_) if slot > 0 => {
                InputRole::Weight
            }
            Op::Binary(_) | Op::MatMul(_) => InputRole::Either,
            Op::Materialize => InputRole::Weight,
            _ => InputRole::Activation,
        }
    }

    /// How output rows map to rows of input `slot`, given every input's shape and the output's.
    /// Constant inputs are not streamed; their map is irrelevant.
    pub fn row_map(&self, slot: usize, inputs: &[&[usize]], output: &[usize]) -> RowMap {
        let rows = |d: &[usize]| crate::plan::row_geometry(d).1;
        let input = inputs[slot];
        // Inputs aligned with the output's last two axes (rank >= 2 on both sides).
        let aligned = input.len() >= 2 && output.len() >= 2;
        match self {
            Op::Conv(c) if c.residual && slot == 3 => RowMap::Same,
            Op::Conv(c) => RowMap::Window {
                kernel: c.kernel[0],
                stride: c.strides[0],
                dilation: c.dilations[0],
                pad: c.pads[0],
            },
            Op::Pool(_) => RowMap::Accumulate,
            Op::ConvTranspose(c) => RowMap::Transposed {
                kernel: c.kernel[0],
                stride: c.strides[0],
                dilation: c.dilations[0],
                pad: c.pads[0],
            },
            Op::GlobalAvgPool if input.len() == 4 => RowMap::Accumulate,
            Op::BatchNorm(_) | Op::Unary(_) | Op::Materialize => RowMap::Same,
            Op::Binary(_) => {
                if aligned && rows(input) == rows(output) {
                    RowMap::Same
                } else if !aligned || rows(input) == 1 {
                    RowMap::First
                } else {
                    RowMap::Whole
                }
            }
            Op::Concat(c) if c.axis + 2 == output.len() => {
                RowMap::Offset { offset: inputs[..slot].iter().map(|d| d[c.axis]).sum() }
            }
            Op::Concat(_) => RowMap::Same,
            Op::Reshape(_) if aligned && input[input.len() - 2..] == output[output.len() - 2..] => {
                RowMap::Same
            }
            Op::Transpose(t) if keeps_rows(&t.perm) => RowMap::Same,
            Op::Resize(r) => RowMap::Resize(r.clone()),
            Op::Gemm(g) if slot == 0 && !g.trans_a => RowMap::Same,
            Op::MatMul(_) if slot == 0 && aligned && input.len() == output.len() => RowMap::Same,
            _ => RowMap::Whole,
        }
    }

    /// How the node folds input rows into its output as they arrive, for ops that fire on input
    /// rows (pooling); `None` for ops that fire on output rows.
    pub fn fold(&self, input: &[usize]) -> Option<Fold> {
        match self {
            Op::GlobalAvgPool if input.len() == 4 => Some(Fold::All),
            Op::Pool(p) => Some(Fold::Window {
                kernel: p.kernel[0],
                stride: p.strides[0],
                dilation: p.dilations[0],
                pad: p.pads[0],
            }),
            _ => None,
        }
    }

    /// Output shape from input shapes.
    pub fn infer(&self, x: &[&[usize]]) -> Result<Vec<usize>> {
        let arity = |n: usize| -> Result<()> {
            if x.len() < n {
                return Err(Error::shape(
                    self.name(),
                    format!("expects {n} inputs, got {}", x.len()),
                ));
            }
            Ok(())
        };
        arity(1)?;
        match self {
            Op::Conv(c) => {
                arity(2)?;
                let y = c.infer(x[0], x[1])?;
                if let Some(b) = x.get(2) {
                    if *b != [y[1]] {
                        return Err(Error::shape(
                            "Conv",
                            format!("bias {b:?} for {} channels", y[1]),
                        ));
                    }
                }
                if c.residual && x.get(3) != Some(&y.as_slice()) {
                    return Err(Error::shape(
                        "Conv",
                        format!("residual {:?} for output {y:?}", x.get(3)),
                    ));
                }
                Ok(y)
            }
            Op::ConvTranspose(c) => {
                arity(2)?;
                c.infer(x[0], x[1])
            }
            Op::Pool(p) => p.infer(x[0]),
            Op::GlobalAvgPool => pool::global_pool_infer(x[0]),
            Op::BatchNorm(b) => {
                arity(3)?;
                b.infer(x[0], x[1])
            }
            Op::Unary(_) | Op::Materialize => Ok(x[0].to_vec()),
            Op::Binary(b) => {
                arity(2)?;
                b.infer(x[0], x[1])
            }
            Op::Concat(c) => c.infer(x),
            Op::Reshape(r) => r.infer(x[0]),
            Op::Transpose(t) => t.infer(x[0]),
            Op::Resize(r) => r.infer(x[0]),
            Op::Gemm(g) => {
                arity(2)?;
                g.infer(x[0], x[1], x.get(2).copied())
            }
            Op::MatMul(m) => {
                arity(2)?;
                m.infer(x[0], x[1])
            }
            Op::Reduce(r) => r.infer(x[0]),
            Op::Softmax(s) => s.infer(x[0]),
        }
    }

    /// The ONNX form of this op (activations become a second node).
    pub(crate) fn export(&self) -> Result<Export> {
        Ok(match self {
            Op::Conv(c) => c.export(),
            Op::ConvTranspose(c) => c.export(),
            Op::Pool(p) => p.export(),
            Op::GlobalAvgPool => Export::new("GlobalAveragePool"),
            Op::BatchNorm(b) => b.export(),
            Op::Unary(a) => eltwise::export_activation(a),
            Op::Binary(b) => b.export(),
            Op::Concat(c) => c.export(),
            Op::Reshape(r) => r.export(),
            Op::Transpose(t) => t.export(),
            Op::Resize(r) => r.export(),
            Op::Gemm(g) => g.export(),
            Op::MatMul(m) => m.export(),
            Op::Reduce(r) => r.export(),
            Op::Softmax(s) if s.coerce_2d => {
                return Err(Error::Unsupported {
                    op: "Softmax".into(),
                    node: String::new(),
                    opset: 17,
                    reason: "opset < 13 softmax over several axes cannot be exported".into(),
                })
            }
            Op::Softmax(s) => s.export(),
            Op::Materialize => Export::new("Identity"),
        })
    }
}

/// An extra input appended when exporting (after the node's own inputs).
#[derive(Debug)]
pub(crate) enum ExtraInput {
    /// An omitted optional input (empty name).
    Empty,
    /// A constant made for the export.
    Const(Tensor),
}

/// How an op is written back to ONNX.
#[derive(Debug)]
pub(crate) struct Export {
    pub op_type: &'static str,
    pub attrs: Vec<AttributeProto>,
    pub extra_inputs: Vec<ExtraInput>,
    pub act: Option<Activation>,
    /// The node's last input is added to the op's result (an Add node) before the activation.
    pub residual: bool,
}

impl Export {
    pub fn new(op_type: &'static str) -> Self {
        Export { op_type, attrs: Vec::new(), extra_inputs: Vec::new(), act: None, residual: false }
    }

    pub fn residual(mut self, residual: bool) -> Self {
        self.residual = residual;
        self
    }

    pub fn attr(mut self, a: AttributeProto) -> Self {
        self.attrs.push(a);
        self
    }

    pub fn const_input(mut self, t: Tensor) -> Self {
        self.extra_inputs.push(ExtraInput::Const(t));
        self
    }

    pub fn empty_input(mut self) -> Self {
        self.extra_inputs.push(ExtraInput::Empty);
        self
    }

    pub fn act(mut self, a: Option<Activation>) -> Self {
        self.act = a;
        self
    }
}

/// Whether a permutation leaves the last two axes (rows and columns) in place.
fn keeps_rows(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2 && perm[r - 2] == r - 2 && perm[r - 1] == r - 1
}
