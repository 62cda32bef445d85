//! Writes the seed corpus: small ONNX models covering every op family the importer knows,
//! built with the graph builder and exported (`cargo run --bin seeds -- seeds/import`; the
//! plan target's seeds, three option bytes and a model, go to `seeds/plan`).

use frugal_core::ops::{Activation, PoolKind, ResizeMode};
use frugal_core::{onnx, GraphBuilder, Result};

fn tiny(kind: usize) -> Result<frugal_core::Graph> {
    let mut b = GraphBuilder::new(&format!("seed{kind}"), kind as u64);
    let x = b.input("x", &[1, 3, 16, 16]);
    let relu = Some(Activation::Relu);
    let y = match kind {
        0 => {
            let c = b.conv(x, 4, 3, 1, 1, 1, relu)?;
            let d = b.conv(c, 4, 3, 2, 1, 4, Some(Activation::Clip { min: 0.0, max: 6.0 }))?;
            let p = b.global_avg_pool(d)?;
            let f = b.flatten(p)?;
            let f = b.dense(f, 5, None)?;
            b.softmax(f, 1)?
        }
        1 => {
            let c = b.conv(x, 4, 3, 1, 1, 1, None)?;
            let s = b.conv(c, 4, 1, 1, 0, 1, None)?;
            let a = b.add(c, s)?;
            let p = b.pool(PoolKind::Max, a, 3, 2, 1)?;
            b.upsample(p, 2, ResizeMode::Nearest)?
        }
        2 => {
            let c = b.conv(x, 4, 3, 2, 1, 1, Some(Activation::HardSwish))?;
            let u = b.upsample(c, 2, ResizeMode::Linear)?;
            let k = b.concat(&[u, x], 1)?;
            b.squeeze_excite(k, 2)?
        }
        _ => {
            let c = b.conv(x, 4, 3, 1, 1, 1, Some(Activation::Sigmoid))?;
            let p = b.pool(PoolKind::Avg, c, 2, 2, 0)?;
            let t = b.conv_transpose(p, 4, 2, 2, 0, 0, relu)?;
            b.channel_shuffle(t, 2)?
        }
    };
    b.output(y);
    b.finish()
}

fn main() -> Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "seeds/import".into());
    std::fs::create_dir_all(&dir).expect("corpus folder");
    for kind in 0..4 {
        let bytes = onnx::export::to_bytes(&tiny(kind)?)?;
        std::fs::write(format!("{dir}/seed{kind}.onnx"), &bytes).expect("write seed");
        // The plan target reads three option bytes first.
        let plan_dir = format!("{dir}/../plan");
        std::fs::create_dir_all(&plan_dir).expect("corpus folder");
        let mut with_opts = vec![kind as u8, 3, kind as u8];
        with_opts.extend_from_slice(&bytes);
        std::fs::write(format!("{plan_dir}/seed{kind}.bin"), with_opts).expect("write seed");
    }
    Ok(())
}
