//! The imported model: nodes in topological order over values with static shapes.
//!
//! Constants (weights, biases, folded shape tensors) are values that carry their data; every
//! other value is an activation that some node produces or that the caller feeds in.

mod builder;

pub use builder::GraphBuilder;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ops::Op;
use crate::tensor::{numel, DType, Tensor};

/// Index of a value in [`Graph::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId(pub usize);

/// Index of a node in [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub usize);

/// What the graph knows about one value.
#[derive(Clone, Debug)]
pub struct Value {
    /// Name in the source model (unique).
    pub name: String,
    /// Static shape, resolved at import.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// The data of a constant (weights, folded tensors); `None` for activations.
    pub constant: Option<Tensor>,
}

impl Value {
    /// Element count.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Size in bytes at this value's dtype.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// True for weights and folded constants.
    pub fn is_constant(&self) -> bool {
        self.constant.is_some()
    }
}

/// One operator application.
#[derive(Clone, Debug)]
pub struct Node {
    /// Name in the source model (or generated).
    pub name: String,
    /// The normalised operator.
    pub op: Op,
    /// Input values; constants among them are the node's weights.
    pub inputs: Vec<ValueId>,
    /// Output values (every op of the normalised set has exactly one).
    pub outputs: Vec<ValueId>,
}

impl Node {
    /// The single output of the node.
    pub fn output(&self) -> ValueId {
        self.outputs[0]
    }
}

/// A model ready to plan: static shapes, normalised ops, topological order.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Model name (graph name or file stem).
    pub name: String,
    /// All values, activations and constants.
    pub values: Vec<Value>,
    /// Nodes in a valid execution (topological) order.
    pub nodes: Vec<Node>,
    /// Model inputs fed by the caller, in declaration order.
    pub inputs: Vec<ValueId>,
    /// Model outputs returned to the caller, in declaration order.
    pub outputs: Vec<ValueId>,
    /// `metadata_props` of the source model (for example class labels).
    pub metadata: Vec<(String, String)>,
    /// Opset of the default ONNX domain the model was imported from (export uses 17 when 0).
    pub opset: i64,
    /// Extra values fed from a model input. Recomputation gives a recomputed branch its own
    /// feed of the input, so the input need not be held while the branch lags behind; column
    /// strips feed each strip its own columns.
    pub aliases: Vec<Alias>,
    /// Values that are some columns of another value, read in place (column strips: a
    /// shortcut reads its columns of a map its neighbouring convolution reads wider).
    pub views: Vec<View>,
}

/// A value that is columns `[column, column + width)` of `source`, read where `source` lies
/// ([`Graph::views`]): no node computes it and no buffer holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The value read.
    pub value: ValueId,
    /// The value it is columns of (never itself a view).
    pub source: ValueId,
    /// Its first column in `source`.
    pub column: usize,
}

/// A value fed from a model input again ([`Graph::aliases`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    /// The value fed.
    pub value: ValueId,
    /// The model input it copies.
    pub input: usize,
    /// Only columns `[start, end)` of the input (a column strip's), or all of them.
    pub columns: Option<[usize; 2]>,
}

impl Graph {
    /// Values fed from the caller: the model inputs, then their aliases.
    pub fn feeds(&self) -> usize {
        self.inputs.len() + self.aliases.len()
    }

    /// The value feed `k` writes.
    pub fn feed_value(&self, k: usize) -> ValueId {
        if k < self.inputs.len() {
            self.inputs[k]
        } else {
            self.aliases[k - self.inputs.len()].value
        }
    }

    /// The model input feed `k` copies.
    pub fn feed_source(&self, k: usize) -> usize {
        if k < self.inputs.len() {
            k
        } else {
            self.aliases[k - self.inputs.len()].input
        }
    }

    /// The columns `[start, end)` of its model input that feed `k` copies, where it copies
    /// only some (a column strip's feed).
    pub fn feed_columns(&self, k: usize) -> Option<[usize; 2]> {
        k.checked_sub(self.inputs.len()).and_then(|a| self.aliases[a].columns)
    }

    /// The value `v` reads in place, with its first column there: `(v, 0)` unless `v` is a
    /// view ([`Graph::views`]).
    pub fn source_of(&self, v: ValueId) -> (ValueId, usize) {
        self.views.iter().find(|w| w.value == v).map_or((v, 0), |w| (w.source, w.column))
    }

    /// Whether `v` is fed from the caller (a model input or an alias of one).
    pub fn is_fed(&self, v: ValueId) -> bool {
        self.inputs.contains(&v) || self.aliases.iter().any(|a| a.value == v)
    }

    /// The value with this id.
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0]
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// Looks a value up by name.
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name).map(ValueId)
    }

    /// Metadata entry by key.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Reorders the nodes topologically, keeping the present order wherever it is already
    /// valid (Kahn's algorithm taking the earliest ready node first). Nodes reading values
    /// nobody produces keep their place relative to the rest; `validate` reports them.
    pub fn sort_nodes(&mut self) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let producers = self.producers();
        let n = self.nodes.len();
        let mut waiting = vec![0usize; n];
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, node) in self.nodes.iter().enumerate() {
            for &v in &node.inputs {
                if let Some(p) = producers.get(v.0).copied().flatten() {
                    if p.0 != i {
                        waiting[i] += 1;
                        readers[p.0].push(i);
                    }
                }
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for &r in &readers[i] {
                waiting[r] -= 1;
                if waiting[r] == 0 {
                    ready.push(Reverse(r));
                }
            }
        }
        if order.len() < n {
            return; // a cycle: leave it for `validate` to report
        }
        let mut old: Vec<Option<Node>> =
            std::mem::take(&mut self.nodes).into_iter().map(Some).collect();
        self.nodes = order.into_iter().filter_map(|i| old[i].take()).collect();
    }

    /// The node producing each value (`None` for inputs and constants).
    pub fn producers(&self) -> Vec<Option<NodeId>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &o in &n.outputs {
                p[o.0] = Some(NodeId(i));
            }
        }
        p
    }

    /// The nodes reading each value, in node order (a node reading a value twice appears twice).
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut c = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                c[v.0].push(NodeId(i));
            }
        }
        c
    }

    /// Non-constant inputs of a node (the activations it reads).
    pub fn activation_inputs<'a>(&'a self, node: &'a Node) -> impl Iterator<Item = ValueId> + 'a {
        node.inputs.iter().copied().filter(move |v| !self.value(*v).is_constant())
    }

    /// Total bytes of all constants (the model's weights as imported).
    pub fn weight_bytes(&self) -> usize {
        self.values.iter().filter_map(|v| v.constant.as_ref()).map(Tensor::nbytes).sum()
    }

    /// Number of parameters (elements of float constants).
    pub fn parameter_count(&self) -> usize {
        self.values
            .iter()
            .filter_map(|v| v.constant.as_ref())
            .filter(|t| t.dtype().is_float())
            .map(Tensor::len)
            .sum()
    }

    /// Checks the structural invariants every later stage relies on: ids in range, each
    /// activation produced once, nodes in topological order, inputs and outputs well formed.
    pub fn validate(&self) -> Result<()> {
        let nv = self.values.len();
        let mut produced = vec![false; nv];
        let views_of = |v: ValueId| self.views.iter().filter(move |w| w.source == v);
        for w in &self.views {
            if w.value.0 >= nv || w.source.0 >= nv || self.source_of(w.source).0 != w.source {
                return Err(Error::malformed(format!("view {:?} of {:?}", w.value, w.source)));
            }
        }
        for k in 0..self.feeds() {
            let i = self.feed_value(k);
            if i.0 >= nv || self.value(i).is_constant() || self.feed_source(k) >= self.inputs.len()
            {
                return Err(Error::malformed(format!("graph input {i:?} is not an activation")));
            }
            produced[i.0] = true;
            views_of(i).for_each(|w| produced[w.value.0] = true);
        }
        for n in &self.nodes {
            for &v in &n.inputs {
                if v.0 >= nv {
                    return Err(Error::malformed(format!("node '{}' reads unknown value", n.name)));
                }
                if !produced[v.0] && !self.value(v).is_constant() {
                    return Err(Error::malformed(format!(
                        "node '{}' reads '{}' before it is produced",
                        n.name,
                        self.value(v).name
                    )));
                }
            }
            if n.outputs.len() != 1 {
                return Err(Error::malformed(format!("node '{}' must have one output", n.name)));
            }
            for &o in &n.outputs {
                if o.0 >= nv || produced[o.0] || self.value(o).is_constant() {
                    return Err(Error::malformed(format!(
                        "node '{}' output is produced twice or is a constant",
                        n.name
                    )));
                }
                produced[o.0] = true;
                views_of(o).for_each(|w| produced[w.value.0] = true);
            }
        }
        for &o in &self.outputs {
            if self.inputs.contains(&o) {
                return Err(Error::malformed(format!(
                    "graph output '{}' is a model input; nothing computes it",
                    self.value(o).name
                )));
            }
            if o.0 >= nv || !produced[o.0] {
                return Err(Error::malformed(format!(
                    "graph output '{}' is never produced",
                    self.values.get(o.0).map_or("?", |v| v.name.as_str())
                )));
            }
        }
        Ok(())
    }

    /// Re-runs shape inference over every node and checks it agrees with the stored shapes.
    pub fn check_shapes(&self) -> Result<()> {
        for n in &self.nodes {
            let shapes: Vec<&[usize]> =
                n.inputs.iter().map(|&v| self.value(v).shape.as_slice()).collect();
            let out = n.op.infer(&shapes).map_err(|e| match e {
                Error::Shape { reason, .. } => Error::shape(&n.name, reason),
                other => other,
            })?;
            if out != self.value(n.output()).shape {
                return Err(Error::shape(
                    &n.name,
                    format!("inferred {:?}, stored {:?}", out, self.value(n.output()).shape),
                ));
            }
        }
        Ok(())
    }

    /// Removes nodes whose outputs nobody needs and constants nobody reads, renumbering values.
    pub fn prune(&mut self) {
        let mut live = vec![false; self.values.len()];
        for &o in &self.outputs {
            live[o.0] = true;
        }
        for k in 0..self.feeds() {
            live[self.feed_value(k).0] = true;
        }
        let mut keep = vec![false; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|o| live[o.0]) {
                keep[i] = true;
                for &v in &n.inputs {
                    live[v.0] = true;
                }
            }
        }
        let mut remap = vec![usize::MAX; self.values.len()];
        let mut values = Vec::new();
        for (i, v) in std::mem::take(&mut self.values).into_iter().enumerate() {
            if live[i] {
                remap[i] = values.len();
                values.push(v);
            }
        }
        self.values = values;
        let nodes = std::mem::take(&mut self.nodes);
        self.nodes = nodes
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(mut n, _)| {
                n.inputs.iter_mut().for_each(|v| *v = ValueId(remap[v.0]));
                n.outputs.iter_mut().for_each(|v| *v = ValueId(remap[v.0]));
                n
            })
            .collect();
        self.aliases.iter_mut().for_each(|a| a.value = ValueId(remap[a.value.0]));
        self.views.retain(|w| live[w.value.0] && live[w.source.0]);
        for w in self.views.iter_mut() {
            (w.value, w.source) = (ValueId(remap[w.value.0]), ValueId(remap[w.source.0]));
        }
        self.inputs.iter_mut().for_each(|v| *v = ValueId(remap[v.0]));
        self.outputs.iter_mut().for_each(|v| *v = ValueId(remap[v.0]));
    }

    /// A one-line-per-node listing: op, output shape and size.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for n in &self.nodes {
            let v = self.value(n.output());
            let _ = writeln!(
                s,
                "{:<40} {:<28} {:?} {}",
                n.name,
                n.op.describe(),
                v.shape,
                crate::format::bytes(v.nbytes())
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_nodes_restores_a_topological_order_and_keeps_a_valid_one() {
        let g = crate::zoo::arch::se_net(32, 32, 4, 0).unwrap();
        let mut sorted = g.clone();
        sorted.sort_nodes();
        let names = |g: &Graph| g.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&sorted), names(&g), "a valid order must not move");
        let mut shuffled = g.clone();
        shuffled.nodes.reverse();
        assert!(shuffled.validate().is_err());
        shuffled.sort_nodes();
        shuffled.validate().unwrap();
        assert_eq!(shuffled.nodes.len(), g.nodes.len());
    }

    #[test]
    fn fold_depth_counts_whole_map_pools_on_the_deepest_path() {
        let g = crate::zoo::arch::se_net(32, 32, 4, 0).unwrap();
        let depth = crate::plan::fold_depth(&g);
        let input = g.feed_value(0);
        assert_eq!(depth[input.0], 0);
        // Every squeeze-and-excitation block adds one pass; the classifier's pool one more.
        let out = depth[g.outputs[0].0];
        assert!(out >= 2, "depth of the output {out}");
        for n in &g.nodes {
            let d = n.inputs.iter().map(|v| depth[v.0]).max().unwrap_or(0);
            assert!(depth[n.output().0] >= d && depth[n.output().0] <= d + 1);
        }
    }
}
