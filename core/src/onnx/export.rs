//! Writes a [`Graph`] as an ONNX model (opset 17), so zoo networks and normalised imports can be
//! checked against onnxruntime.

use std::path::Path;

use prost::Message;

use super::proto::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use super::tensor::{dtype_to_onnx, tensor_to_proto};
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::ops::{eltwise::export_activation, ExtraInput, Op};

/// Opset written by the exporter.
pub const EXPORT_OPSET: i64 = 17;

pub(crate) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

pub(crate) fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

pub(crate) fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

pub(crate) fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

fn value_info(g: &Graph, id: ValueId) -> ValueInfoProto {
    let v = g.value(id);
    ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype_to_onnx(v.dtype)),
                shape: Some(TensorShapeProto {
                    dim: v
                        .shape
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The graph as an ONNX `ModelProto`. Fused activations become separate nodes and standalone
/// batch norms become `BatchNormalization` with mean 0 and variance 1, so the file means exactly
/// what the graph computes.
pub fn to_model(g: &Graph) -> Result<ModelProto> {
    let mut gp = GraphProto { name: Some(g.name.clone()), ..Default::default() };
    let mut extra = 0usize;
    let mut fresh = |base: &str| {
        extra += 1;
        format!("{base}__x{extra}")
    };
    for v in &g.values {
        if let Some(t) = &v.constant {
            gp.initializer.push(tensor_to_proto(&v.name, t));
        }
    }
    for n in &g.nodes {
        let e = n.op.export().map_err(|err| match err {
            Error::Unsupported { op, opset, reason, .. } => {
                Error::Unsupported { op, node: n.name.clone(), opset, reason }
            }
            other => other,
        })?;
        let mut inputs: Vec<String> = n.inputs.iter().map(|&v| g.value(v).name.clone()).collect();
        if let Op::BatchNorm(_) = n.op {
            // scale, shift -> scale, bias, mean = 0, var = 1 (epsilon 0).
            let c = g.value(n.inputs[1]).shape[0];
            for (base, val) in [("mean", 0.0f32), ("var", 1.0)] {
                let name = fresh(&format!("{}.{base}", n.name));
                gp.initializer.push(tensor_to_proto(
                    &name,
                    &crate::tensor::Tensor::from_f32(vec![c], vec![val; c]),
                ));
                inputs.push(name);
            }
        }
        for x in e.extra_inputs {
            match x {
                ExtraInput::Empty => inputs.push(String::new()),
                ExtraInput::Const(t) => {
                    let name = fresh(&n.name);
                    gp.initializer.push(tensor_to_proto(&name, &t));
                    inputs.push(name);
                }
            }
        }
        let out = g.value(n.output()).name.clone();
        // A fused residual add comes back as an Add node between the op and its activation.
        let residual = if e.residual { inputs.pop() } else { None };
        let act_in = if e.act.is_some() { fresh(&out) } else { out.clone() };
        let main_out = if residual.is_some() { fresh(&out) } else { act_in.clone() };
        gp.node.push(NodeProto {
            name: Some(n.name.clone()),
            op_type: Some(e.op_type.into()),
            input: inputs,
            output: vec![main_out.clone()],
            attribute: e.attrs,
            ..Default::default()
        });
        if let Some(r) = residual {
            gp.node.push(NodeProto {
                name: Some(format!("{}.add", n.name)),
                op_type: Some("Add".into()),
                input: vec![main_out, r],
                output: vec![act_in.clone()],
                ..Default::default()
            });
        }
        let main_out = act_in;
        if let Some(act) = e.act {
            let a = export_activation(&act);
            let mut ins = vec![main_out];
            for x in a.extra_inputs {
                if let ExtraInput::Const(t) = x {
                    let name = fresh(&n.name);
                    gp.initializer.push(tensor_to_proto(&name, &t));
                    ins.push(name);
                }
            }
            gp.node.push(NodeProto {
                name: Some(format!("{}.act", n.name)),
                op_type: Some(a.op_type.into()),
                input: ins,
                output: vec![out],
                attribute: a.attrs,
                ..Default::default()
            });
        }
    }
    gp.input = g.inputs.iter().map(|&v| value_info(g, v)).collect();
    gp.output = g.outputs.iter().map(|&v| value_info(g, v)).collect();
    Ok(ModelProto {
        ir_version: Some(8),
        producer_name: Some("frugal".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(EXPORT_OPSET),
        }],
        metadata_props: g
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: Some(k.clone()), value: Some(v.clone()) })
            .collect(),
        graph: Some(gp),
        ..Default::default()
    })
}

/// Serialised ONNX bytes of the graph.
pub fn to_bytes(g: &Graph) -> Result<Vec<u8>> {
    Ok(to_model(g)?.encode_to_vec())
}

/// Writes the graph to an `.onnx` file.
pub fn save(g: &Graph, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, to_bytes(g)?).map_err(|e| Error::Io { path: path.into(), cause: e })
}
