//! Planning imported graphs with options drawn from the input (part sizes, storage, cuts) and
//! running small ones: every plan passes the independent checker, and by parts gives the bits
//! of layer by layer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| frugal_fuzz::plan_and_run(data));
