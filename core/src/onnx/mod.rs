//! ONNX import and export.
//!
//! The file is memory-mapped and decoded with prost into [`proto::ModelProto`] whose byte fields
//! borrow the map, so weights stored as raw data are not copied. Import fixes every dynamic
//! dimension from the caller's input shape, evaluates shape-only subgraphs, translates each node
//! into the normalised [`Op`] set (one family file per op family) and then runs the
//! normalisation passes (batch norm folding, activation fusion).

pub mod export;
mod fold;
mod node;
#[allow(missing_docs)]
pub mod proto;
mod tensor;

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use prost::Message;

pub use node::{normalize_axis, Arg, InputInfo, OnnxNode};
pub use tensor::{dtype_from_onnx, tensor_from_proto, tensor_to_proto};

use crate::error::{Error, Result};
use crate::graph::{Graph, Node, Value, ValueId};
use crate::ops::{self, InputRole, Op};
use crate::tensor::{DType, Tensor};
use proto::{ModelProto, NodeProto, ValueInfoProto};
use tensor::ExternalFiles;

/// Lowest opset of the default domain frugal reads.
pub const MIN_OPSET: i64 = 7;
/// Highest opset of the default domain frugal reads.
pub const MAX_OPSET: i64 = 18;

/// How to import a model.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Input shapes by input name; an empty name means the first input. Dynamic dims not given
    /// here default to 1 for the leading (batch) axis and are an error elsewhere.
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// Skip the normalisation passes (for debugging and for tests that compare both forms).
    pub keep_unfused: bool,
}

impl ImportOptions {
    /// Options giving the shape of the first input.
    pub fn with_input_shape(shape: &[usize]) -> Self {
        ImportOptions { input_shapes: vec![(String::new(), shape.to_vec())], keep_unfused: false }
    }
}

/// Reads an ONNX model from a file (memory-mapped).
pub fn load(path: impl AsRef<Path>, options: &ImportOptions) -> Result<Graph> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::Io { path: path.into(), cause: e })?;
    let len = file.metadata().map_err(|e| Error::Io { path: path.into(), cause: e })?.len();
    let bytes = if len == 0 {
        Bytes::new()
    } else {
        // SAFETY: read-only map of a model file that is not modified while in use.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::Io { path: path.into(), cause: e })?;
        Bytes::from_owner(map)
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let map = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    let mut g = import_bytes(bytes, &path.display().to_string(), ExternalFiles::new(dir), options)?;
    // Weights read in place from the map (not copies made for alignment or folding).
    for v in &mut g.values {
        if let Some(t) = &mut v.constant {
            t.mark_if_in(map.clone());
        }
    }
    if g.name.is_empty() {
        g.name = stem;
    }
    Ok(g)
}

/// Reads an ONNX model from memory (external data is resolved against the current folder).
pub fn load_bytes(bytes: Bytes, options: &ImportOptions) -> Result<Graph> {
    import_bytes(bytes, "<memory>", ExternalFiles::new(".".into()), options)
}

/// A model input as declared in the file: its name and dims (`None` where dynamic).
pub type DeclaredInput = (String, Vec<Option<usize>>);

/// The inputs a model file declares, without importing it (to size inputs before import).
pub fn declared_inputs(path: impl AsRef<Path>) -> Result<Vec<DeclaredInput>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.into(), cause: e })?;
    declared_inputs_bytes(Bytes::from(bytes), &path.display().to_string())
}

/// [`declared_inputs`] of a model in memory.
pub fn declared_inputs_bytes(bytes: Bytes, name: &str) -> Result<Vec<DeclaredInput>> {
    use proto::tensor_shape_proto::dimension::Value as Dim;
    use proto::type_proto::Value as Ty;
    let model = ModelProto::decode(bytes).map_err(|e| {
        invalid(
            name,
            format!("protobuf decoding failed ({e}); the file is truncated, corrupt or not ONNX"),
        )
    })?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| invalid(name, "no graph; this does not look like an ONNX model"))?;
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    Ok(g.input
        .iter()
        .filter(|i| !inits.contains(i.name.as_deref().unwrap_or("")))
        .map(|i| {
            let dims = match i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(Ty::TensorType(t)) => t
                    .shape
                    .as_ref()
                    .map(|s| {
                        s.dim
                            .iter()
                            .map(|d| match d.value {
                                Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            (i.name.clone().unwrap_or_default(), dims)
        })
        .collect())
}

fn invalid(path: &str, reason: impl Into<String>) -> Error {
    Error::InvalidModel { path: path.to_string(), reason: reason.into() }
}

fn import_bytes(
    bytes: Bytes,
    path: &str,
    ext: ExternalFiles,
    options: &ImportOptions,
) -> Result<Graph> {
    if bytes.is_empty() {
        return Err(invalid(path, "the file is empty"));
    }
    let model = ModelProto::decode(bytes).map_err(|e| {
        invalid(
            path,
            format!("protobuf decoding failed ({e}); the file is truncated, corrupt or not ONNX"),
        )
    })?;
    if model.ir_version.unwrap_or(0) <= 0 || model.graph.is_none() {
        return Err(invalid(path, "no ir_version or graph; this does not look like an ONNX model"));
    }
    let mut imp = Importer::new(&model, path, ext)?;
    imp.run(options)?;
    let mut g = imp.graph;
    crate::limits::check_finite_weights(&g)?;
    if !options.keep_unfused {
        crate::passes::normalize(&mut g);
    }
    g.prune();
    g.validate()?;
    Ok(g)
}

struct Importer<'m> {
    model: &'m ModelProto,
    path: String,
    opset: i64,
    graph: Graph,
    names: HashMap<String, ValueId>,
    ext: ExternalFiles,
}

impl<'m> Importer<'m> {
    fn new(model: &'m ModelProto, path: &str, ext: ExternalFiles) -> Result<Self> {
        let mut opset = None;
        for o in &model.opset_import {
            let domain = o.domain.as_deref().unwrap_or("");
            if domain.is_empty() || domain == "ai.onnx" {
                opset = o.version;
            }
        }
        // IR version 3+ must declare it; older files implied opset 1.
        let opset = opset.unwrap_or(1);
        if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
            return Err(Error::Opset {
                domain: String::new(),
                opset,
                min: MIN_OPSET,
                max: MAX_OPSET,
            });
        }
        let graph = Graph {
            name: model.graph.as_ref().and_then(|g| g.name.clone()).unwrap_or_default(),
            metadata: model
                .metadata_props
                .iter()
                .map(|p| (p.key.clone().unwrap_or_default(), p.value.clone().unwrap_or_default()))
                .collect(),
            opset,
            ..Default::default()
        };
        Ok(Importer { model, path: path.to_string(), opset, graph, names: HashMap::new(), ext })
    }

    fn add_value(
        &mut self,
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        constant: Option<Tensor>,
    ) -> Result<ValueId> {
        crate::limits::check_shape(&format!("value '{name}'"), &shape)?;
        let id = ValueId(self.graph.values.len());
        self.names.insert(name.clone(), id);
        self.graph.values.push(Value { name, shape, dtype, constant });
        Ok(id)
    }

    fn add_constant(&mut self, name: String, t: Tensor) -> Result<ValueId> {
        let (shape, dtype) = (t.shape().to_vec(), t.dtype());
        self.add_value(name, shape, dtype, Some(t))
    }

    fn fresh_name(&self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 0;
        while self.names.contains_key(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        name
    }

    fn run(&mut self, options: &ImportOptions) -> Result<()> {
        let g = self.model.graph.as_ref().ok_or_else(|| invalid(&self.path, "no graph"))?;
        for init in &g.initializer {
            let t = tensor::tensor_from_proto(init, Some(&mut self.ext))?;
            self.add_constant(init.name.clone().unwrap_or_default(), t)?;
        }
        let mut first = true;
        for input in &g.input {
            let name = input.name.clone().unwrap_or_default();
            if self.names.contains_key(&name) {
                continue; // IR < 4 lists initializers as inputs too
            }
            let given = options
                .input_shapes
                .iter()
                .find(|(n, _)| n == &name || (first && n.is_empty()))
                .map(|(_, s)| s.clone());
            first = false;
            let (shape, dtype) = self.input_shape(input, given)?;
            let id = self.add_value(name, shape, dtype, None)?;
            self.graph.inputs.push(id);
        }
        for (name, _) in &options.input_shapes {
            if !name.is_empty() && !g.input.iter().any(|i| i.name.as_deref() == Some(name)) {
                return Err(Error::Input {
                    name: name.clone(),
                    reason: "the model has no input of that name".into(),
                });
            }
        }
        for np in topo_order(&g.node, &self.names)? {
            self.import_node(np)?;
        }
        for out in &g.output {
            let name = out.name.clone().unwrap_or_default();
            let id = *self.names.get(&name).ok_or_else(|| {
                Error::malformed(format!("graph output '{name}' is not produced by any node"))
            })?;
            if self.graph.value(id).is_constant() || self.graph.inputs.contains(&id) {
                return Err(Error::Unsupported {
                    op: "Output".into(),
                    node: name,
                    opset: self.opset,
                    reason: "an output that is a constant or a model input (nothing to compute)"
                        .into(),
                });
            }
            // Identity nodes were removed: give the value the output's public name.
            self.graph.values[id.0].name = name;
            self.graph.outputs.push(id);
        }
        Ok(())
    }

    /// The static shape of a model input: dims from the file, dynamic ones from the caller.
    fn input_shape(
        &self,
        input: &ValueInfoProto,
        given: Option<Vec<usize>>,
    ) -> Result<(Vec<usize>, DType)> {
        use proto::tensor_shape_proto::dimension::Value as Dim;
        use proto::type_proto::Value as Ty;
        let name = input.name.clone().unwrap_or_default();
        let tt = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Ty::TensorType(t)) => t,
            _ => return Err(Error::Input { name, reason: "not a tensor input".into() }),
        };
        let dtype = tt.elem_type.and_then(dtype_from_onnx);
        if dtype != Some(DType::F32) {
            return Err(Error::Input {
                name,
                reason: format!(
                    "element type {} is not supported; frugal's model inputs are float32",
                    tt.elem_type.unwrap_or(0)
                ),
            });
        }
        let declared: Vec<Option<i64>> = match &tt.shape {
            Some(s) => s
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(v)) if v > 0 => Some(v),
                    _ => None,
                })
                .collect(),
            None => match &given {
                Some(g) => vec![None; g.len()],
                None => {
                    return Err(Error::Input {
                        name,
                        reason: "has no declared shape; give --input-shape".into(),
                    })
                }
            },
        };
        let describe = || {
            declared
                .iter()
                .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match given {
            Some(g) => {
                if g.len() != declared.len() {
                    return Err(Error::Input {
                        name,
                        reason: format!(
                            "the model expects rank {} [{}], got shape {g:?}",
                            declared.len(),
                            describe()
                        ),
                    });
                }
                for (i, (d, &v)) in declared.iter().zip(&g).enumerate() {
                    if v == 0 || d.is_some_and(|d| d as usize != v) {
                        return Err(Error::Input {
                            name,
                            reason: format!(
                                "dim {i} must be {}, got shape {g:?} (model declares [{}])",
                                d.map_or("positive".to_string(), |d| d.to_string()),
                                describe()
                            ),
                        });
                    }
                }
                Ok((g, DType::F32))
            }
            None => {
                let mut shape = Vec::with_capacity(declared.len());
                for (i, d) in declared.iter().enumerate() {
                    match d {
                        Some(v) => shape.push(*v as usize),
                        None if i == 0 => shape.push(1),
                        None => {
                            return Err(Error::Input {
                                name,
                                reason: format!(
                                    "has dynamic dims [{}]; give the input shape (for example --input-shape 1,3,640,640)",
                                    describe()
                                ),
                            })
                        }
                    }
                }
                Ok((shape, DType::F32))
            }
        }
    }

    fn node_view<'a>(&'a self, np: &'a NodeProto) -> Result<OnnxNode<'a>> {
        let name = match np.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => np.output.first().cloned().unwrap_or_else(|| op_name(np).to_string()),
        };
        let mut inputs = Vec::with_capacity(np.input.len());
        for i in &np.input {
            if i.is_empty() {
                inputs.push(None);
                continue;
            }
            let id = self.names.get(i).ok_or_else(|| {
                Error::malformed(format!("node '{name}' reads '{i}', which nothing produces"))
            })?;
            let v = self.graph.value(*id);
            inputs.push(Some(InputInfo { shape: &v.shape, constant: v.constant.as_ref() }));
        }
        Ok(OnnxNode { proto: np, name, opset: self.opset, inputs })
    }

    fn import_node(&mut self, np: &NodeProto) -> Result<()> {
        let n = self.node_view(np)?;
        let domain = np.domain.as_deref().unwrap_or("");
        if !domain.is_empty() && domain != "ai.onnx" {
            return Err(n.unsupported(format!("custom domain '{domain}'")));
        }
        let op_type = op_name(np);
        let out_name = np.output.first().cloned().unwrap_or_default();
        if out_name.is_empty() {
            return Err(Error::malformed(format!("node '{}' has no output", n.name)));
        }
        match op_type {
            "Identity" | "Dropout" => {
                let lacks = format!("node '{}' lacks its input 0", n.name);
                if op_type == "Dropout" && np.output.get(1).is_some_and(|m| !m.is_empty()) {
                    // The mask output of inference Dropout is all ones; nothing real reads it.
                    let mask = Tensor::from_u8(
                        n.shape(0)?.to_vec(),
                        vec![1; crate::tensor::numel(n.shape(0)?)],
                    );
                    self.add_constant(np.output[1].clone(), mask)?;
                }
                let src = *np
                    .input
                    .first()
                    .and_then(|x| self.names.get(x))
                    .ok_or_else(|| Error::malformed(lacks))?;
                self.names.insert(out_name, src);
                return Ok(());
            }
            "Constant" => {
                let t = constant_value(&n)?;
                self.add_constant(out_name, t)?;
                return Ok(());
            }
            _ => {}
        }
        if np.output.iter().skip(1).any(|o| !o.is_empty())
            && !matches!(op_type, "BatchNormalization" | "MaxPool")
        {
            return Err(n.unsupported("more than one output"));
        }
        if fold::can_fold(&n) {
            let t = fold::eval(&n)?;
            self.add_constant(out_name, t)?;
            return Ok(());
        }
        let (op, args) = translate(&n)?;
        drop(n);
        self.add_node(np, op, args)
    }

    /// Adds a translated node, binding each argument according to the op's input roles.
    fn add_node(&mut self, np: &NodeProto, op: Op, args: Vec<Arg>) -> Result<()> {
        let name = match np.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => np.output[0].clone(),
        };
        let mut inputs = Vec::with_capacity(args.len());
        for (slot, arg) in args.into_iter().enumerate() {
            let id = match arg {
                Arg::Input(i) => {
                    *np.input.get(i).and_then(|x| self.names.get(x)).ok_or_else(|| {
                        Error::malformed(format!("node '{name}' lacks its input {i}"))
                    })?
                }
                Arg::Const(t) => {
                    let cname = self.fresh_name(&format!("{name}.const{slot}"));
                    self.add_constant(cname, t)?
                }
            };
            let v = self.graph.value(id);
            let id = match (op.input_role(slot), v.is_constant()) {
                (InputRole::Weight, false) => {
                    return Err(Error::Unsupported {
                        op: op_name(np).to_string(),
                        node: name,
                        opset: self.opset,
                        reason: format!("input {slot} ('{}') must be a constant weight", v.name),
                    })
                }
                (InputRole::Activation, true) => self.materialize(id)?,
                _ => id,
            };
            let v = self.graph.value(id);
            if !v.is_constant() && v.dtype != DType::F32 {
                return Err(Error::Unsupported {
                    op: op_name(np).to_string(),
                    node: name,
                    opset: self.opset,
                    reason: format!(
                        "input '{}' is {} at run time; frugal computes in float",
                        v.name, v.dtype
                    ),
                });
            }
            inputs.push(id);
        }
        let shapes: Vec<&[usize]> =
            inputs.iter().map(|&v| self.graph.value(v).shape.as_slice()).collect();
        let shape = op.infer(&shapes).map_err(|e| match e {
            Error::Shape { reason, .. } => {
                Error::shape(format!("{} '{}'", op_name(np), name), reason)
            }
            other => other,
        })?;
        let out = self.add_value(np.output[0].clone(), shape, DType::F32, None)?;
        self.graph.nodes.push(Node { name, op, inputs, outputs: vec![out] });
        Ok(())
    }

    /// A node that copies constant `id` into an activation (as f32).
    fn materialize(&mut self, id: ValueId) -> Result<ValueId> {
        let v = self.graph.value(id).clone();
        let t = v.constant.as_ref().map(|t| t.cast(DType::F32));
        let cid = self.add_value(
            self.fresh_name(&format!("{}.f32", v.name)),
            v.shape.clone(),
            DType::F32,
            t,
        )?;
        let out = self.add_value(
            self.fresh_name(&format!("{}.value", v.name)),
            v.shape,
            DType::F32,
            None,
        )?;
        self.graph.nodes.push(Node {
            name: format!("materialize {}", v.name),
            op: Op::Materialize,
            inputs: vec![cid],
            outputs: vec![out],
        });
        Ok(out)
    }
}

/// The op type of a node ('' when missing).
fn op_name(np: &NodeProto) -> &str {
    np.op_type.as_deref().unwrap_or("")
}

/// The tensor of a Constant node, from whichever attribute holds it.
fn constant_value(n: &OnnxNode<'_>) -> Result<Tensor> {
    if let Some(t) = n.tensor("value")? {
        return Ok(t);
    }
    if n.has_attr("value_float") {
        return Ok(Tensor::from_f32(vec![], vec![n.float("value_float", 0.0)?]));
    }
    if let Some(v) = n.floats("value_floats")? {
        return Ok(Tensor::from_f32(vec![v.len()], v));
    }
    if n.has_attr("value_int") {
        return Ok(Tensor::from_i64(vec![], vec![n.int("value_int", 0)?]));
    }
    if let Some(v) = n.ints("value_ints")? {
        return Ok(Tensor::from_i64(vec![v.len()], v));
    }
    Err(n.unsupported(
        "Constant without a tensor, float or int value (sparse and string constants are not read)",
    ))
}

/// The op family translation for a node that runs at inference time.
fn translate(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
    use ops::*;
    match n.op_type() {
        "Conv" => Conv::import(n),
        "ConvTranspose" => ConvTranspose::import(n),
        "MaxPool" => Pool::import(n, PoolKind::Max),
        "AveragePool" => Pool::import(n, PoolKind::Avg),
        "GlobalAveragePool" => pool::import_global(n),
        "BatchNormalization" => BatchNorm::import(n),
        "Relu" | "Clip" | "LeakyRelu" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "Tanh"
        | "Erf" => eltwise::import_activation(n),
        "Add" => Binary::import(n, BinaryKind::Add),
        "Sub" => Binary::import(n, BinaryKind::Sub),
        "Mul" => Binary::import(n, BinaryKind::Mul),
        "Div" => Binary::import(n, BinaryKind::Div),
        "PRelu" => Binary::import(n, BinaryKind::PRelu),
        "Concat" => Concat::import(n),
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => Reshape::import(n),
        "Transpose" => Transpose::import(n),
        "Resize" | "Upsample" => Resize::import(n),
        "Gemm" => Gemm::import(n),
        "MatMul" => MatMul::import(n),
        "ReduceMean" => Reduce::import(n, ReduceKind::Mean),
        "ReduceSum" => Reduce::import(n, ReduceKind::Sum),
        "ReduceMax" => Reduce::import(n, ReduceKind::Max),
        "Softmax" => Softmax::import(n),
        other => Err(n.unsupported(format!(
            "frugal does not implement {other}; see the README for the supported operator list"
        ))),
    }
}

/// Nodes in an order where every input is produced first (ONNX requires it; some exporters do
/// not comply, so sort stably when needed).
fn topo_order<'a>(
    nodes: &'a [NodeProto],
    known: &HashMap<String, ValueId>,
) -> Result<Vec<&'a NodeProto>> {
    // Kahn's algorithm, linear in nodes and edges (a long chain listed backwards must not take
    // quadratic time), taking ready nodes in file order so sorted files keep their order.
    crate::limits::check_nodes("the graph", nodes.len())?;
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    let mut waiting = vec![0usize; nodes.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for x in n.input.iter().filter(|x| !x.is_empty() && !known.contains_key(x.as_str())) {
            match producer.get(x.as_str()) {
                Some(&p) => {
                    waiting[i] += 1;
                    readers[p].push(i);
                }
                None => {
                    return Err(Error::malformed(format!(
                        "node '{}' reads '{x}', which no node, input or initializer produces",
                        n.name.clone().unwrap_or_default()
                    )))
                }
            }
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
        (0..nodes.len()).filter(|&i| waiting[i] == 0).map(std::cmp::Reverse).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(&nodes[i]);
        for &r in &readers[i] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(std::cmp::Reverse(r));
            }
        }
    }
    if order.len() < nodes.len() {
        let stuck = (0..nodes.len()).find(|&i| waiting[i] > 0).map(|i| &nodes[i]);
        return Err(Error::malformed(format!(
            "the graph has a cycle through node '{}'; ONNX graphs must be acyclic",
            stuck.and_then(|n| n.name.clone()).unwrap_or_default()
        )));
    }
    Ok(order)
}
