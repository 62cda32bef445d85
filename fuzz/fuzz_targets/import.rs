//! Any bytes as an ONNX model: import must return a graph or an error, never panic, hang or
//! allocate without bound; a graph that imports must plan, and its plans must pass the checker.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| frugal_fuzz::import_and_plan(data));
