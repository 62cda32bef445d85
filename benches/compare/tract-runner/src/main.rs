//! tract-runner MODEL.onnx --input-shape 1,3,224,224 --runs N [--threads T]
//!
//! Loads the model with tract (optimized), runs it twice to warm up, then N timed runs on a
//! fixed pseudo-random input, and prints `{"median_ms":..,"min_ms":..,"runs":N}`. With
//! `--threads T` above 1, tract's kernels that support it (matrix products, convolutions,
//! element-wise ops) run on a T-thread pool; everything else stays on the calling thread.
use std::time::Instant;
use tract_linalg::multithread;
use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut model_path = None;
    let mut shape: Vec<usize> = vec![1, 3, 224, 224];
    let mut runs = 10usize;
    let mut threads = 1usize;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--input-shape" => {
                i += 1;
                shape = args[i].split(',').map(|d| d.trim().parse()).collect::<Result<_, _>>()?;
            }
            "--threads" => {
                i += 1;
                threads = args[i].parse()?;
            }
            "--runs" => {
                i += 1;
                runs = args[i].parse()?;
            }
            path => model_path = Some(path.to_string()),
        }
        i += 1;
    }
    let model_path = model_path.ok_or_else(|| {
        anyhow::anyhow!(
            "usage: tract-runner MODEL.onnx [--input-shape 1,3,224,224] [--runs N] [--threads T]"
        )
    })?;
    if runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }

    if threads > 1 {
        multithread::set_default_executor(multithread::Executor::multithread(threads));
    }
    // value_info entries are shape hints; some exporters write a symbolic batch there
    // ("DynamicDimension.0") that tract then cannot unify with the batch of 1 we fix.
    let model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(&model_path)?
        .with_input_fact(0, f32::fact(&shape).into())?
        .into_optimized()?
        .into_runnable()?;

    // Fixed pseudo-random input in [-1, 1) (xorshift), the same on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let len: usize = shape.iter().product();
    let data: Vec<f32> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let input: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), data)?.into();

    for _ in 0..2 {
        model.run(tvec!(input.clone().into()))?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let inputs = tvec!(input.clone().into()); // the copy is not timed
        let t = Instant::now();
        let out = model.run(inputs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    // Median as `frugal bench` takes it: the middle element (the upper one for even N).
    times.sort_by(f64::total_cmp);
    let median = times[runs / 2];
    println!("{{\"median_ms\":{:.3},\"min_ms\":{:.3},\"runs\":{}}}", median, times[0], runs);
    Ok(())
}
