//! What the fuzz targets do, as plain functions (so a regression test can call them too).

use bytes::Bytes;
use frugal_core::plan::verify::verify;
use frugal_core::{
    onnx, DType, Graph, ImportOptions, NodeId, Plan, PlanOptions, Session, Strategy,
};

/// Largest arena (bytes) and weight total a fuzz input may run with: planning is checked for
/// any graph, running only for small ones so each input takes milliseconds.
const RUN_ARENA: usize = 4 << 20;
const RUN_WEIGHTS: usize = 4 << 20;

fn imports(data: &[u8]) -> Vec<Graph> {
    let bytes = Bytes::copy_from_slice(data);
    [ImportOptions::default(), ImportOptions::with_input_shape(&[1, 3, 16, 16])]
        .iter()
        .filter_map(|o| onnx::load_bytes(bytes.clone(), o).ok())
        .collect()
}

/// Plans `graph` with `options`; a plan the planner makes must pass the checker.
fn checked(graph: &Graph, options: &PlanOptions) -> Option<Plan> {
    let plan = Plan::build(graph, options).ok()?;
    if let Err(e) = verify(graph, &plan) {
        panic!("the planner made a plan its checker refuses: {e}\n{}", graph.summary());
    }
    Some(plan)
}

fn weight_bytes(graph: &Graph) -> usize {
    graph.values.iter().filter_map(|v| v.constant.as_ref()).map(|t| t.nbytes()).sum()
}

/// Runs `plan` on the CPU with a fixed input when it is small; `None` when skipped or refused.
fn run(graph: &Graph, plan: &Plan) -> Option<Vec<Vec<u32>>> {
    if plan.arena_bytes > RUN_ARENA || weight_bytes(graph) > RUN_WEIGHTS {
        return None;
    }
    let backend = Box::new(frugal_cpu::CpuBackend::with_threads(1).ok()?);
    let mut session = Session::new(graph, plan, backend).ok()?;
    let inputs: Vec<Vec<f32>> = graph
        .inputs
        .iter()
        .map(|&v| {
            let n: usize = graph.value(v).shape.iter().product();
            (0..n).map(|i| ((i * 7919 % 211) as f32 - 105.0) / 50.0).collect()
        })
        .collect();
    if inputs.iter().map(Vec::len).sum::<usize>() > RUN_ARENA / 4 {
        return None;
    }
    let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let outs = session.run(&refs).ok()?;
    Some(
        outs.iter()
            .map(|t| {
                t.as_f32().map(|v| v.iter().map(|f| f.to_bits()).collect()).unwrap_or_default()
            })
            .collect(),
    )
}

/// The `import` target.
pub fn import_and_plan(data: &[u8]) {
    for g in imports(data) {
        for strategy in [Strategy::Naive, Strategy::LayerByLayer, Strategy::ByParts] {
            checked(&g, &PlanOptions::new(strategy));
        }
    }
}

/// The `plan` target: the first bytes choose the options, the rest is the model.
pub fn plan_and_run(data: &[u8]) {
    let Some((&[rows, per_node, flags], model)) = data.split_first_chunk::<3>() else { return };
    for g in imports(model) {
        let mut by_parts = PlanOptions::new(Strategy::ByParts);
        by_parts.part_rows = 1 + (rows % 8) as usize;
        // Every `per_node`-th node fires on its own part size.
        if per_node > 0 {
            by_parts.parts = (0..g.nodes.len())
                .filter(|i| i % (per_node as usize) == 0)
                .map(|i| (NodeId(i), 1 + (i + per_node as usize) % 5))
                .collect();
        }
        if flags & 1 == 1 {
            by_parts.storage = DType::F16;
        }
        if flags & 2 == 2 {
            by_parts.cuts = Some(Vec::new());
        }
        let mut lbl = PlanOptions::new(Strategy::LayerByLayer);
        lbl.storage = by_parts.storage;
        let (Some(a), Some(b)) = (checked(&g, &lbl), checked(&g, &by_parts)) else { continue };
        if let (Some(x), Some(y)) = (run(&g, &a), run(&g, &b)) {
            assert!(x == y, "by parts differs from layer by layer\n{}", g.summary());
        }
    }
}
