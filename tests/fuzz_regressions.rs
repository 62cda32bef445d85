//! Every input the fuzz targets (`fuzz/`) ever crashed on, replayed through the same code on
//! stable Rust: import, planning, the plan checker and small runs must give errors or equal
//! bits, never a panic. New crashes go into `fuzz/regressions/<target>/`.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

fn replay(target: &str, run: fn(&[u8])) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs in {}", dir.display());
    for f in files {
        let data = std::fs::read(&f).unwrap();
        if let Err(e) = std::panic::catch_unwind(|| run(&data)) {
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            panic!("{} panics again: {msg}", f.display());
        }
    }
}

#[test]
fn import_regressions() {
    replay("import", targets::import_and_plan);
}

#[test]
fn plan_regressions() {
    replay("plan", targets::plan_and_run);
}
