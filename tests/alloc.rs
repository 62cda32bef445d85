//! Memory is a planned artefact: a session allocates its arena once, and running allocates
//! nothing at all. Checked with a counting global allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};

use frugal::{backend_by_name, model, zoo, Graph, Plan, PlanOptions, Session, Strategy};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated and not yet freed.
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size(), Relaxed);
        LARGEST.fetch_max(l.size(), Relaxed);
        LIVE.fetch_add(l.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size(), Relaxed);
        LARGEST.fetch_max(l.size(), Relaxed);
        LIVE.fetch_add(l.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new, Relaxed);
        LARGEST.fetch_max(new, Relaxed);
        LIVE.fetch_add(new as isize - l.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn reset() {
    ALLOCS.store(0, Relaxed);
    BYTES.store(0, Relaxed);
    LARGEST.store(0, Relaxed);
}

/// Builds the graphs and checks their sessions.
fn check(build: impl FnOnce() -> Vec<Graph>, strategy: Strategy) {
    for g in build() {
        check_graph(&g, strategy);
    }
}

fn check_graph(graph: &Graph, strategy: Strategy) {
    check_plan(graph, &Plan::build(graph, &PlanOptions::new(strategy)).unwrap());
}

fn check_plan(graph: &Graph, plan: &Plan) {
    let backend = backend_by_name("cpu").unwrap();
    reset();
    let mut session = Session::new(graph, plan, backend).unwrap();
    // The arena is exactly the planned size, and the largest allocation a session makes but
    // for weights the backend repacks (a convolution's, in place of the row-major copy).
    let weight = graph.values.iter().filter(|v| v.is_constant()).map(|v| v.nbytes()).max();
    let largest = session.arena_bytes().max(weight.unwrap_or(0));
    assert!(LARGEST.load(Relaxed) >= session.arena_bytes(), "the arena is allocated");
    assert!(LARGEST.load(Relaxed) <= largest, "no allocation above the arena or a weight");
    assert_eq!(
        session.arena_bytes(),
        plan.arena_bytes() + session.workspace_bytes().next_multiple_of(64)
    );
    let shape = &session.inputs()[0].shape;
    let input = common::seeded_input(shape, 1);
    let mut outs: Vec<Vec<f32>> =
        session.outputs().iter().map(|o| vec![0.0; o.shape.iter().product()]).collect();
    let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    session.run_into(&[&input], &mut views).unwrap();
    reset();
    for _ in 0..3 {
        session.run_into(&[&input], &mut views).unwrap();
    }
    assert_eq!(ALLOCS.load(Relaxed), 0, "running allocated {} bytes", BYTES.load(Relaxed));
}

/// One test function for every case: the allocator counts every thread, so nothing else may
/// run in this process while a case counts (the test harness allocates when it reports a test).
#[test]
fn sessions_allocate_their_arena_once_and_nothing_while_running() {
    check(|| vec![zoo::mobilenet_v2(96, 10, 0).unwrap()], Strategy::LayerByLayer);
    check(|| vec![zoo::resnet(18, 64, 64, 10, 0).unwrap()], Strategy::Naive);
    check(|| vec![model::load(None, None).unwrap()], Strategy::LayerByLayer);
    check(|| vec![zoo::mobilenet_v2(96, 10, 0).unwrap()], Strategy::ByParts);
    check(|| vec![model::load(None, None).unwrap()], Strategy::ByParts);
    // Column strips: each strip's feed gathered from the input, shortcuts reading views.
    let g = zoo::mobilenet_v2(96, 10, 0).unwrap();
    let by_parts = PlanOptions::new(Strategy::ByParts);
    let strips = frugal::plan::strips::smallest(&g, &by_parts, 3).unwrap();
    check_plan(&g, &Plan::build(&g, &strips).unwrap());
    let names = ["se_net", "shuffle_net", "inception", "unet"];
    for strategy in [Strategy::LayerByLayer, Strategy::ByParts] {
        check(|| names.iter().map(|n| zoo::by_name(n, 32, 48, 0).unwrap()).collect(), strategy);
    }
    weights_are_held_once();
}

/// The CPU backend repacks convolution weights at session creation (on AVX-512 processors).
/// A session that takes the graph's weights (as the CLI's do) holds each weight once: the
/// graph's copy is freed as the backend repacks it. `Session::new` leaves the graph's copy
/// beside the backend's.
fn weights_are_held_once() {
    let mut graph = zoo::mobilenet_v2(96, 10, 0).unwrap();
    let weights: usize =
        graph.values.iter().filter_map(|v| v.constant.as_ref()).map(|t| t.nbytes()).sum();
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts)).unwrap();
    let live = || LIVE.load(Relaxed);
    let before = live();
    let shared = Session::new(&graph, &plan, backend_by_name("cpu").unwrap()).unwrap();
    let grew_shared = live() - before;
    let arena = shared.arena_bytes() as isize;
    drop(shared);
    let before = live();
    let backend = backend_by_name("cpu").unwrap();
    let taking = Session::with_lanes_taking_weights(&mut graph, &plan, backend, 1, 1).unwrap();
    let grew = live() - before;
    assert!(graph.values.iter().all(|v| v.constant.is_none()));
    let w = weights as isize;
    // Where the backend repacks (AVX-512), one copy beside the graph's; elsewhere none.
    assert!(
        grew_shared < arena + w * 11 / 10,
        "beside the graph: {grew_shared} bytes, weights {w}"
    );
    assert!(grew < arena + w / 10, "weights taken: {grew} bytes, arena {arena}, weights {w}");
    drop(taking);
}
