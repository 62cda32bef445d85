//! The executor's view of a plan: where each buffer lives, how each node's inputs are bound,
//! and the kernel call of one firing. Shared by the session and by kernel profiling, so that
//! what is timed is exactly what runs.

use std::ops::Range;

use crate::backend::{Dims, Kernel, Operand, RowWindow, WeightRef};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, ValueId};
use crate::ops::Op;
use crate::rows::{Fold, RowMap};
use crate::tensor::{DType, Tensor};

/// Dims of a runtime tensor, or an error for ranks beyond what kernels take.
pub(crate) fn dims_of(shape: &[usize], what: &str, opset: i64) -> Result<Dims> {
    Dims::new(shape).ok_or_else(|| Error::Unsupported {
        op: what.to_string(),
        node: String::new(),
        opset,
        reason: format!(
            "tensors of rank {} (at most {} axes run)",
            shape.len(),
            crate::backend::MAX_RANK
        ),
    })
}

/// Where one buffer lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Byte offset in the arena.
    pub offset: usize,
    /// Rows held (ring capacity).
    pub capacity: usize,
    /// Shape of the whole tensor.
    pub dims: Dims,
}

/// The buffers of a plan, as the executor addresses them.
#[derive(Debug)]
pub(crate) struct Buffers {
    list: Vec<Layout>,
}

impl Buffers {
    pub fn new(list: Vec<Layout>) -> Buffers {
        Buffers { list }
    }

    /// The window of buffer `b` covering tensor rows `rows`.
    pub fn window(&self, b: usize, rows: Range<usize>) -> RowWindow {
        let l = &self.list[b];
        let (_, _, w) = l.dims.rows();
        RowWindow {
            offset: l.offset,
            dtype: DType::F32,
            dims: l.dims,
            capacity: l.capacity,
            row_stride: w,
            first_row: rows.start,
            rows: rows.len(),
        }
    }

    /// Rows of the whole tensor in buffer `b`.
    pub fn height(&self, b: usize) -> usize {
        self.list[b].dims.rows().1
    }
}

/// How a node input is bound at run time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bound {
    /// Buffer index.
    Arena(usize),
    /// Uploaded weight.
    Weight(WeightRef),
}

/// What the executor keeps of a node.
#[derive(Clone, Debug)]
pub(crate) struct NodeExec {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Bound>,
    /// Row map of each input.
    pub maps: Vec<RowMap>,
    /// How it folds input rows into its output, for nodes firing on input rows (pooling).
    pub fold: Option<Fold>,
    /// Buffer index of the output.
    pub output: usize,
}

impl NodeExec {
    /// Binds `node`: activations to the buffers `buffer_of` names, constants through `upload`.
    pub fn bind(
        graph: &Graph,
        node: &Node,
        buffer_of: &dyn Fn(ValueId) -> Result<usize>,
        upload: &mut dyn FnMut(ValueId, &Tensor) -> Result<WeightRef>,
    ) -> Result<NodeExec> {
        let shapes: Vec<&[usize]> =
            node.inputs.iter().map(|&v| graph.value(v).shape.as_slice()).collect();
        let out_shape = &graph.value(node.output()).shape;
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for &v in &node.inputs {
            inputs.push(match &graph.value(v).constant {
                Some(t) => Bound::Weight(upload(v, t)?),
                None => Bound::Arena(buffer_of(v)?),
            });
        }
        Ok(NodeExec {
            name: node.name.clone(),
            maps: (0..node.inputs.len()).map(|s| node.op.row_map(s, &shapes, out_shape)).collect(),
            fold: node.op.fold(shapes[0]),
            op: node.op.clone(),
            inputs,
            output: buffer_of(node.output())?,
        })
    }
}

/// The kernel call of one firing on `rows`: output rows, or input rows for accumulating nodes.
/// Input windows hold exactly the rows the row maps ask for.
pub(crate) fn kernel_for<'a>(
    node: &'a NodeExec,
    rows: [usize; 2],
    buffers: &Buffers,
    concat_inputs: &'a mut Vec<RowWindow>,
) -> Result<Kernel<'a>> {
    let [a, b] = rows;
    let misbound = |i: usize, want: &str| {
        Error::Plan(format!(
            "input {i} of node '{}' ({}) must be {want}",
            node.name,
            node.op.name()
        ))
    };
    let window = |i: usize, buf: usize| -> RowWindow {
        let (lo, hi) = node.maps[i].need(a, b, buffers.height(buf));
        buffers.window(buf, lo..hi)
    };
    let arena = |i: usize| -> Result<RowWindow> {
        match node.inputs[i] {
            Bound::Arena(buf) => Ok(window(i, buf)),
            Bound::Weight(_) => Err(misbound(i, "an activation")),
        }
    };
    let weight = |i: usize| -> Result<WeightRef> {
        match node.inputs[i] {
            Bound::Weight(w) => Ok(w),
            Bound::Arena(_) => Err(misbound(i, "a constant weight")),
        }
    };
    let opt_weight = |i: usize| -> Result<Option<WeightRef>> {
        if i < node.inputs.len() {
            weight(i).map(Some)
        } else {
            Ok(None)
        }
    };
    let operand = |i: usize| -> Operand {
        match node.inputs[i] {
            Bound::Weight(w) => Operand::Weight(w),
            Bound::Arena(buf) => Operand::Arena(window(i, buf)),
        }
    };
    let out = node.output;
    let y = match node.fold {
        Some(fold) => {
            let (lo, hi) = fold.touched(a, b, buffers.height(out));
            buffers.window(out, lo..hi)
        }
        None => buffers.window(out, a..b),
    };
    Ok(match &node.op {
        Op::Conv(op) => Kernel::Conv { op, x: arena(0)?, w: weight(1)?, b: opt_weight(2)?, y },
        Op::ConvTranspose(op) => {
            Kernel::ConvTranspose { op, x: arena(0)?, w: weight(1)?, b: opt_weight(2)?, y }
        }
        Op::Pool(op) => Kernel::Pool { op, x: arena(0)?, y },
        Op::GlobalAvgPool => Kernel::GlobalAvgPool { x: arena(0)?, y },
        Op::BatchNorm(bn) => {
            Kernel::Affine { act: bn.act, x: arena(0)?, scale: weight(1)?, shift: weight(2)?, y }
        }
        Op::Unary(act) => Kernel::Unary { act: *act, x: arena(0)?, y },
        Op::Binary(op) => Kernel::Binary { op, a: operand(0), b: operand(1), y },
        Op::Concat(c) => {
            concat_inputs.clear();
            for i in 0..node.inputs.len() {
                concat_inputs.push(arena(i)?);
            }
            Kernel::Concat { axis: c.axis, xs: concat_inputs.as_slice(), y }
        }
        Op::Reshape(_) | Op::Materialize => Kernel::Copy { x: operand(0), y },
        Op::Transpose(t) => Kernel::Transpose { perm: &t.perm, x: arena(0)?, y },
        Op::Resize(op) => Kernel::Resize { op, x: arena(0)?, y },
        Op::Gemm(op) => Kernel::Gemm { op, a: arena(0)?, b: weight(1)?, c: opt_weight(2)?, y },
        Op::MatMul(op) => Kernel::MatMul { op, a: operand(0), b: operand(1), y },
        Op::Reduce(op) => Kernel::Reduce { op, x: arena(0)?, y },
        Op::Softmax(op) => Kernel::Softmax { op, x: arena(0)?, y },
    })
}
