//! ONNX import: normalisation (batch norm folding, activation fusion, Identity/Dropout
//! removal, shape subgraph folding), version-specific operator forms, external data, and
//! clear errors for what frugal does not run. Models are written here with the ONNX protobuf
//! types, then checked against a direct computation.

mod common;

use frugal::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use frugal::{onnx, ImportOptions, Op, Strategy, Tensor};
use prost::Message;

fn vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(if d > 0 {
                                tensor_shape_proto::dimension::Value::DimValue(d)
                            } else {
                                tensor_shape_proto::dimension::Value::DimParam("N".into())
                            }),
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

fn init(name: &str, t: &Tensor) -> TensorProto {
    onnx::tensor_to_proto(name, t)
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: Some(format!("{op}_{}", outputs[0])),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn tensor_attr(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(init("", t)),
        ..Default::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        metadata_props: vec![StringStringEntryProto {
            key: Some("labels".into()),
            value: Some("a,b".into()),
        }],
        graph: Some(GraphProto {
            name: Some("t".into()),
            node: nodes,
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn load(bytes: Vec<u8>, shape: Option<&[usize]>) -> frugal::Result<frugal::Graph> {
    let opts = shape.map(ImportOptions::with_input_shape).unwrap_or_default();
    onnx::load_bytes(bytes.into(), &opts)
}

fn seeded(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f32(shape.to_vec(), common::seeded_input(shape, seed))
}

/// conv -> BatchNormalization -> Relu: one fused node whose output equals the three-step
/// computation done by hand.
#[test]
fn batch_norm_and_relu_fold_into_the_conv() {
    let w = seeded(&[4, 2, 3, 3], 1);
    let (gamma, beta, mean, var) = (
        seeded(&[4], 2),
        seeded(&[4], 3),
        seeded(&[4], 4),
        Tensor::from_f32(vec![4], vec![0.5, 1.0, 2.0, 0.1]),
    );
    let bytes = model(
        13,
        vec![
            node("Conv", &["x", "w"], &["c"], vec![ints("pads", &[1, 1, 1, 1])]),
            node(
                "BatchNormalization",
                &["c", "g", "b", "m", "v"],
                &["bn"],
                vec![float("epsilon", 1e-3)],
            ),
            node("Identity", &["bn"], &["id"], vec![]),
            node("Dropout", &["id"], &["d"], vec![]),
            node("Relu", &["d"], &["y"], vec![]),
        ],
        vec![init("w", &w), init("g", &gamma), init("b", &beta), init("m", &mean), init("v", &var)],
        vec![vi("x", &[1, 2, 5, 6])],
        vec![vi("y", &[1, 4, 5, 6])],
    );
    let g = load(bytes.clone(), None).unwrap();
    assert_eq!(g.nodes.len(), 1, "{}", g.summary());
    assert!(matches!(&g.nodes[0].op, Op::Conv(c) if c.act == Some(frugal::Activation::Relu)));
    assert_eq!(g.value(g.outputs[0]).name, "y");
    let unfused =
        onnx::load_bytes(bytes.into(), &ImportOptions { keep_unfused: true, ..Default::default() })
            .unwrap();
    assert_eq!(unfused.nodes.len(), 3);
    let x = seeded(&[1, 2, 5, 6], 9);
    let a = common::run(&g, Strategy::LayerByLayer, &[x.as_f32().unwrap()]);
    let b = common::run(&unfused, Strategy::LayerByLayer, &[x.as_f32().unwrap()]);
    common::check(a[0].as_f32().unwrap(), b[0].as_f32().unwrap(), common::Tolerance::Close)
        .unwrap();
    // Hand computation of one output element: (0, 1, 2, 3).
    let (xv, wv) = (x.as_f32().unwrap(), w.as_f32().unwrap());
    let mut acc = 0.0f64;
    for ci in 0..2 {
        for ky in 0..3 {
            for kx in 0..3 {
                let (iy, ix) = (2 + ky as isize - 1, 3 + kx as isize - 1);
                if (0..5).contains(&iy) && (0..6).contains(&ix) {
                    acc += (xv[(ci * 5 + iy as usize) * 6 + ix as usize]
                        * wv[((2 + ci) * 3 + ky) * 3 + kx]) as f64;
                }
            }
        }
    }
    let c = 1;
    let bn = (acc as f32 - mean.as_f32().unwrap()[c]) / (var.as_f32().unwrap()[c] + 1e-3).sqrt()
        * gamma.as_f32().unwrap()[c]
        + beta.as_f32().unwrap()[c];
    let want = bn.max(0.0);
    let got = a[0].as_f32().unwrap()[(5 + 2) * 6 + 3];
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

/// conv (no bias) -> Add(skip) -> Relu: the add and the activation fuse into the convolution's
/// epilogue (a zero bias is supplied), with the bits of the unfused graph, by parts too, and
/// the fused graph exports back to Conv -> Add -> Relu.
#[test]
fn residual_adds_fuse_into_the_convolution() {
    let (w, w2) = (seeded(&[3, 3, 3, 3], 1), seeded(&[3, 3, 1, 1], 2));
    let bytes = model(
        13,
        vec![
            node("Conv", &["x", "w2"], &["skip"], vec![]),
            node("Conv", &["skip", "w"], &["c"], vec![ints("pads", &[1, 1, 1, 1])]),
            node("Add", &["skip", "c"], &["s"], vec![]),
            node("Relu", &["s"], &["y"], vec![]),
        ],
        vec![init("w", &w), init("w2", &w2)],
        vec![vi("x", &[1, 3, 7, 5])],
        vec![vi("y", &[1, 3, 7, 5])],
    );
    let g = load(bytes.clone(), None).unwrap();
    assert_eq!(g.nodes.len(), 2, "{}", g.summary());
    assert!(matches!(&g.nodes[1].op,
        Op::Conv(c) if c.residual && c.act == Some(frugal::Activation::Relu)));
    assert_eq!(g.nodes[1].inputs.len(), 4);
    let unfused =
        onnx::load_bytes(bytes.into(), &ImportOptions { keep_unfused: true, ..Default::default() })
            .unwrap();
    assert_eq!(unfused.nodes.len(), 4);
    let x = seeded(&[1, 3, 7, 5], 9);
    let x = x.as_f32().unwrap();
    let want = common::run(&unfused, Strategy::LayerByLayer, &[x]);
    let want = want[0].as_f32().unwrap();
    for strategy in [Strategy::LayerByLayer, Strategy::ByParts] {
        let got = common::run(&g, strategy, &[x]);
        common::check(got[0].as_f32().unwrap(), want, common::Tolerance::Exact).unwrap();
    }
    let exported = onnx::export::to_bytes(&g).unwrap();
    let back = load(exported, None).unwrap();
    assert_eq!(back.nodes.len(), 2, "{}", back.summary());
    let got = common::run(&back, Strategy::ByParts, &[x]);
    common::check(got[0].as_f32().unwrap(), want, common::Tolerance::Exact).unwrap();
}

/// A PaddleOCR block as its exporter writes it: conv, hard-swish spelled out as
/// `c * clip(c + 3, 0, 6) / 6`, a learnable scalar affine `s * h + b`, then a pointwise conv.
/// Import makes it two convolutions (the hard-swish fused into the first, the affine folded
/// into the second's weights) whose output is within rounding of the arithmetic, by parts
/// bit for bit as layer by layer, and the fused graph exports and reloads.
#[test]
fn paddle_hardswish_and_scalar_affine_fuse_into_the_convolutions() {
    let (w, w2) = (seeded(&[4, 3, 3, 3], 1), seeded(&[5, 4, 1, 1], 2));
    let scalar = |v: f32| Tensor::from_f32(vec![], vec![v]);
    let one = |v: f32| Tensor::from_f32(vec![1], vec![v]);
    let bytes = model(
        13,
        vec![
            node("Conv", &["x", "w"], &["c"], vec![ints("pads", &[1, 1, 1, 1])]),
            node("Add", &["c", "three"], &["a"], vec![]),
            node("Clip", &["a", "lo", "hi"], &["cl"], vec![]),
            node("Mul", &["c", "cl"], &["m"], vec![]),
            node("Div", &["m", "six"], &["hs"], vec![]),
            node("Mul", &["s", "hs"], &["ms"], vec![]),
            node("Add", &["ms", "b"], &["aff"], vec![]),
            node("Conv", &["aff", "w2"], &["y"], vec![]),
        ],
        vec![
            init("w", &w),
            init("w2", &w2),
            init("three", &scalar(3.0)),
            init("lo", &scalar(0.0)),
            init("hi", &scalar(6.0)),
            init("six", &scalar(6.0)),
            init("s", &one(0.75)),
            init("b", &one(-0.125)),
        ],
        vec![vi("x", &[1, 3, 9, 7])],
        vec![vi("y", &[1, 5, 9, 7])],
    );
    let g = load(bytes.clone(), None).unwrap();
    assert_eq!(g.nodes.len(), 2, "{}", g.summary());
    assert!(matches!(&g.nodes[0].op,
        Op::Conv(c) if c.act == Some(frugal::Activation::HardSwish)));
    assert!(matches!(&g.nodes[1].op, Op::Conv(c) if c.kernel == [1, 1] && c.act.is_none()));
    let unfused =
        onnx::load_bytes(bytes.into(), &ImportOptions { keep_unfused: true, ..Default::default() })
            .unwrap();
    assert_eq!(unfused.nodes.len(), 8, "{}", unfused.summary());
    let x = seeded(&[1, 3, 9, 7], 9);
    let x = x.as_f32().unwrap();
    let want = common::run(&unfused, Strategy::LayerByLayer, &[x]);
    let want = want[0].as_f32().unwrap();
    let lbl = common::run(&g, Strategy::LayerByLayer, &[x]);
    let lbl = lbl[0].as_f32().unwrap();
    common::check(lbl, want, common::Tolerance::Close).unwrap();
    let parts = common::run(&g, Strategy::ByParts, &[x]);
    common::check(parts[0].as_f32().unwrap(), lbl, common::Tolerance::Exact).unwrap();
    let back = load(onnx::export::to_bytes(&g).unwrap(), None).unwrap();
    let got = common::run(&back, Strategy::LayerByLayer, &[x]);
    common::check(got[0].as_f32().unwrap(), lbl, common::Tolerance::Exact).unwrap();
}

/// A Shape -> Gather -> Unsqueeze -> Concat -> Reshape chain folds to a static Reshape.
#[test]
fn shape_subgraphs_are_evaluated_at_import() {
    let idx = Tensor::from_i64(vec![], vec![0]);
    let minus1 = Tensor::from_i64(vec![1], vec![-1]);
    let axes = Tensor::from_i64(vec![1], vec![0]);
    let bytes = model(
        13,
        vec![
            node("Shape", &["x"], &["s"], vec![]),
            node("Gather", &["s", "i"], &["n"], vec![int("axis", 0)]),
            node("Unsqueeze", &["n", "ax"], &["n1"], vec![]),
            node("Cast", &["n1"], &["n2"], vec![int("to", 7)]),
            node("Concat", &["n2", "m1"], &["spec"], vec![int("axis", 0)]),
            node("Reshape", &["x", "spec"], &["y"], vec![]),
        ],
        vec![init("i", &idx), init("m1", &minus1), init("ax", &axes)],
        vec![vi("x", &[0, 3, 4, 4])],
        vec![vi("y", &[0, 48])],
    );
    let g = load(bytes, Some(&[2, 3, 4, 4])).unwrap();
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.value(g.outputs[0]).shape, vec![2, 48]);
    let x = seeded(&[2, 3, 4, 4], 1);
    let y = common::run(&g, Strategy::LayerByLayer, &[x.as_f32().unwrap()]);
    assert_eq!(y[0].as_f32().unwrap(), x.as_f32().unwrap());
}

#[test]
fn constants_and_version_specific_forms() {
    // opset 9: Upsample with a scales input, Clip with attributes; Constant nodes as weights.
    let scales = Tensor::from_f32(vec![4], vec![1.0, 1.0, 2.0, 3.0]);
    let bytes = model(
        9,
        vec![
            node("Constant", &[], &["sc"], vec![tensor_attr("value", &scales)]),
            node("Upsample", &["x", "sc"], &["u"], vec![]),
            node("Clip", &["u"], &["y"], vec![float("min", -0.25), float("max", 0.5)]),
        ],
        vec![],
        vec![vi("x", &[1, 2, 3, 4])],
        vec![vi("y", &[1, 2, 6, 12])],
    );
    let g = load(bytes, None).unwrap();
    let x = seeded(&[1, 2, 3, 4], 2);
    let y = common::run(&g, Strategy::LayerByLayer, &[x.as_f32().unwrap()]);
    let (xv, yv) = (x.as_f32().unwrap(), y[0].as_f32().unwrap());
    for c in 0..2 {
        for oy in 0..6 {
            for ox in 0..12 {
                let want = xv[(c * 3 + oy / 2) * 4 + ox / 3].clamp(-0.25, 0.5);
                assert_eq!(yv[(c * 6 + oy) * 12 + ox], want);
            }
        }
    }
    // opset 11 Softmax on a non-last axis flattens the trailing axes.
    let bytes = model(
        11,
        vec![node("Softmax", &["x"], &["y"], vec![int("axis", 1)])],
        vec![],
        vec![vi("x", &[2, 3, 4])],
        vec![vi("y", &[2, 3, 4])],
    );
    let g = load(bytes, None).unwrap();
    let x = seeded(&[2, 3, 4], 3);
    let y = common::run(&g, Strategy::LayerByLayer, &[x.as_f32().unwrap()]);
    let yv = y[0].as_f32().unwrap();
    let s0: f32 = yv[..12].iter().sum();
    assert!((s0 - 1.0).abs() < 1e-5, "softmax over 12 trailing values sums to 1: {s0}");
}

#[test]
fn external_data_is_read_from_the_models_folder() {
    let dir = std::env::temp_dir().join(format!("frugal-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = seeded(&[3, 2, 1, 1], 5);
    let mut data = vec![0u8; 16];
    data.extend_from_slice(w.bytes());
    std::fs::write(dir.join("weights.bin"), &data).unwrap();
    let ext = |loc: &str, off: usize, len: usize| TensorProto {
        name: Some("w".into()),
        dims: vec![3, 2, 1, 1],
        data_type: Some(1),
        data_location: Some(DataLocation::External as i32),
        external_data: vec![
            StringStringEntryProto { key: Some("location".into()), value: Some(loc.into()) },
            StringStringEntryProto { key: Some("offset".into()), value: Some(off.to_string()) },
            StringStringEntryProto { key: Some("length".into()), value: Some(len.to_string()) },
        ],
        ..Default::default()
    };
    let make = |t: TensorProto| {
        model(
            13,
            vec![node("Conv", &["x", "w"], &["y"], vec![])],
            vec![t],
            vec![vi("x", &[1, 2, 2, 2])],
            vec![vi("y", &[1, 3, 2, 2])],
        )
    };
    let path = dir.join("m.onnx");
    std::fs::write(&path, make(ext("weights.bin", 16, 24))).unwrap();
    let g = onnx::load(&path, &ImportOptions::default()).unwrap();
    let wv = g.values.iter().find_map(|v| v.constant.as_ref()).unwrap();
    assert_eq!(wv.as_f32().unwrap(), w.as_f32().unwrap());
    std::fs::write(&path, make(ext("weights.bin", 16, 4000))).unwrap();
    let e = onnx::load(&path, &ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("external data"), "{e}");
    std::fs::write(&path, make(ext("../../etc/passwd", 0, 24))).unwrap();
    let e = onnx::load(&path, &ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("relative path"), "{e}");
    std::fs::write(&path, make(ext("missing.bin", 0, 24))).unwrap();
    assert!(onnx::load(&path, &ImportOptions::default()).is_err());
}

#[test]
fn unsupported_things_are_named() {
    let unsup = model(
        13,
        vec![node("LSTM", &["x"], &["y"], vec![])],
        vec![],
        vec![vi("x", &[1, 2, 3])],
        vec![vi("y", &[1, 2, 3])],
    );
    let e = load(unsup, None).unwrap_err().to_string();
    assert!(e.contains("LSTM") && e.contains("LSTM_y") && e.contains("opset 13"), "{e}");

    let old = model(
        6,
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![],
        vec![vi("x", &[1, 2])],
        vec![vi("y", &[1, 2])],
    );
    assert!(load(old, None).unwrap_err().to_string().contains("opset 6"));
    let new = model(
        19,
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![],
        vec![vi("x", &[1, 2])],
        vec![vi("y", &[1, 2])],
    );
    assert!(load(new, None).unwrap_err().to_string().contains("opset 19"));

    let mut custom = node("Relu", &["x"], &["y"], vec![]);
    custom.domain = Some("com.microsoft".into());
    let e =
        load(model(13, vec![custom], vec![], vec![vi("x", &[1, 2])], vec![vi("y", &[1, 2])]), None)
            .unwrap_err()
            .to_string();
    assert!(e.contains("com.microsoft"), "{e}");

    let dangling = model(
        13,
        vec![node("Relu", &["nope"], &["y"], vec![])],
        vec![],
        vec![vi("x", &[1, 2])],
        vec![vi("y", &[1, 2])],
    );
    assert!(load(dangling, None).unwrap_err().to_string().contains("nope"));

    let dynamic = model(
        13,
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![],
        vec![vi("x", &[0, 3, 0, 0])],
        vec![vi("y", &[0, 3, 0, 0])],
    );
    assert!(load(dynamic.clone(), None).unwrap_err().to_string().contains("--input-shape"));
    assert!(load(dynamic.clone(), Some(&[1, 4, 8, 8]))
        .unwrap_err()
        .to_string()
        .contains("dim 1 must be 3"));
    assert_eq!(
        load(dynamic, Some(&[2, 3, 8, 8])).unwrap().value(frugal::ValueId(0)).shape,
        vec![2, 3, 8, 8]
    );

    let bad_conv = model(
        13,
        vec![node("Conv", &["x", "w"], &["y"], vec![int("group", 3)])],
        vec![init("w", &seeded(&[4, 2, 3, 3], 1))],
        vec![vi("x", &[1, 2, 5, 5])],
        vec![vi("y", &[1, 4, 3, 3])],
    );
    let e = load(bad_conv, None).unwrap_err().to_string();
    assert!(e.contains("Conv"), "{e}");

    let runtime_weight = model(
        13,
        vec![node("Conv", &["x", "x"], &["y"], vec![])],
        vec![],
        vec![vi("x", &[1, 1, 1, 1])],
        vec![vi("y", &[1, 1, 1, 1])],
    );
    assert!(load(runtime_weight, None).unwrap_err().to_string().contains("must be a constant"));
    assert!(onnx::load_bytes(vec![1u8, 2, 3].into(), &ImportOptions::default()).is_err());
}

/// Weights read in place from a memory-mapped file are marked so; releasing their pages (what
/// the CPU backend does once it holds a repacked copy) leaves the values as they were.
#[test]
fn mapped_weights_keep_their_values_after_their_pages_are_released() {
    let g = onnx::load("models/mobilenet_v2.onnx", &ImportOptions::default()).unwrap();
    let mapped: Vec<&Tensor> =
        g.values.iter().filter_map(|v| v.constant.as_ref()).filter(|t| t.is_mapped()).collect();
    // The large weights of this file are aligned in it, so they are read in place.
    assert!(mapped.iter().map(|t| t.nbytes()).sum::<usize>() > 4 << 20, "{}", mapped.len());
    for t in mapped {
        let before = t.to_f32_vec();
        t.release_pages();
        assert_eq!(t.to_f32_vec(), before);
    }
    // Tensors in memory are never mapped.
    let zoo = frugal::zoo::mobilenet_v2(224, 1000, 1).unwrap();
    assert!(zoo.values.iter().filter_map(|v| v.constant.as_ref()).all(|t| !t.is_mapped()));
}
