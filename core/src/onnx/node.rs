//! A view of one ONNX node during import: typed attribute access, the shapes of its inputs and
//! the data of its constant inputs. Op family files translate from this view.

use super::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};
use super::tensor::tensor_from_proto;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// What the importer knows about one input of a node.
#[derive(Clone, Copy, Debug)]
pub struct InputInfo<'a> {
    /// Static shape.
    pub shape: &'a [usize],
    /// Data when the input is a constant.
    pub constant: Option<&'a Tensor>,
}

/// One node being imported.
#[derive(Debug)]
pub struct OnnxNode<'a> {
    /// The node as decoded.
    pub proto: &'a NodeProto,
    /// Node name, or its first output's name when the node is unnamed.
    pub name: String,
    /// Opset of the default domain.
    pub opset: i64,
    /// One entry per declared input; `None` for an omitted optional input (empty name).
    pub inputs: Vec<Option<InputInfo<'a>>>,
}

/// An input of the translated node: one of the ONNX node's inputs, or a constant made at import
/// (for example the per-channel scale of a normalised batch norm).
#[derive(Debug)]
pub enum Arg {
    /// The ONNX input at this index.
    Input(usize),
    /// A new constant.
    Const(Tensor),
}

impl<'a> OnnxNode<'a> {
    /// ONNX op type.
    pub fn op_type(&self) -> &str {
        self.proto.op_type.as_deref().unwrap_or("")
    }

    /// An `Unsupported` error for this node.
    pub fn unsupported(&self, reason: impl Into<String>) -> Error {
        Error::Unsupported {
            op: self.op_type().to_string(),
            node: self.name.clone(),
            opset: self.opset,
            reason: reason.into(),
        }
    }

    /// A `Shape` error for this node.
    pub fn shape_error(&self, reason: impl Into<String>) -> Error {
        Error::shape(format!("{} '{}'", self.op_type(), self.name), reason)
    }

    fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name.as_deref() == Some(name))
    }

    /// Whether an attribute is present.
    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    fn attr_type(a: &AttributeProto) -> Option<AttributeType> {
        a.r#type.and_then(|t| AttributeType::try_from(t).ok())
    }

    /// Integer attribute, or `default` when absent.
    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => a.i.ok_or_else(|| self.bad_attr(name, "an int")),
        }
    }

    /// Float attribute, or `default` when absent.
    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => a.f.ok_or_else(|| self.bad_attr(name, "a float")),
        }
    }

    /// String attribute, or `default` when absent.
    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        match self.attr(name) {
            None => Ok(default.to_string()),
            Some(a) => match &a.s {
                Some(s) => Ok(String::from_utf8_lossy(s).into_owned()),
                None => Err(self.bad_attr(name, "a string")),
            },
        }
    }

    /// Integer-list attribute, `None` when absent.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => match Self::attr_type(a) {
                Some(AttributeType::Ints) | None => Ok(Some(a.ints.clone())),
                _ => Err(self.bad_attr(name, "a list of ints")),
            },
        }
    }

    /// Float-list attribute, `None` when absent.
    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => match Self::attr_type(a) {
                Some(AttributeType::Floats) | None => Ok(Some(a.floats.clone())),
                _ => Err(self.bad_attr(name, "a list of floats")),
            },
        }
    }

    /// Tensor attribute (Constant's `value`), `None` when absent.
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => match &a.t {
                Some(t) => tensor_from_proto(t, None).map(Some),
                None => Err(self.bad_attr(name, "a tensor")),
            },
        }
    }

    fn bad_attr(&self, name: &str, want: &str) -> Error {
        Error::malformed(format!(
            "attribute '{name}' of {} node '{}' should be {want}",
            self.op_type(),
            self.name
        ))
    }

    /// Number of declared inputs, counting omitted optional ones.
    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    /// Whether input `i` is given (declared and not the empty name).
    pub fn has_input(&self, i: usize) -> bool {
        self.inputs.get(i).is_some_and(Option::is_some)
    }

    /// Input `i`, which must be present.
    pub fn input(&self, i: usize) -> Result<InputInfo<'a>> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| Error::malformed(format!("node '{}' lacks input {i}", self.name)))
    }

    /// Shape of input `i`.
    pub fn shape(&self, i: usize) -> Result<&'a [usize]> {
        Ok(self.input(i)?.shape)
    }

    /// Constant data of input `i`, `None` when absent; an error when present but not constant.
    pub fn const_input(&self, i: usize) -> Result<Option<&'a Tensor>> {
        match self.inputs.get(i).copied().flatten() {
            None => Ok(None),
            Some(InputInfo { constant: Some(t), .. }) => Ok(Some(t)),
            Some(_) => Err(self.unsupported(format!(
                "input {i} must be a constant (computed at import); frugal runs static graphs"
            ))),
        }
    }

    /// Integer values of constant input `i` (any integer or float type), `None` when absent.
    pub fn const_ints(&self, i: usize) -> Result<Option<Vec<i64>>> {
        Ok(self.const_input(i)?.map(Tensor::to_i64_vec))
    }

    /// Float values of constant input `i`, `None` when absent.
    pub fn const_floats(&self, i: usize) -> Result<Option<Vec<f32>>> {
        Ok(self.const_input(i)?.map(Tensor::to_f32_vec))
    }

    /// Rank of input 0.
    pub fn rank(&self) -> Result<usize> {
        Ok(self.shape(0)?.len())
    }

    /// Normalises a possibly negative axis against `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        normalize_axis(axis, rank)
            .ok_or_else(|| self.shape_error(format!("axis {axis} is out of range for rank {rank}")))
    }
}

/// `axis` in `[-rank, rank)` mapped to `[0, rank)`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}
