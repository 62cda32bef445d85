//! `.npy` input and output through the npyz crate.

use std::path::Path;

use frugal_core::{Error, Result, Tensor};
use npyz::WriterBuilder;

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.into(), cause: e }
}

/// Reads an `.npy` file of float32 or float64 values as an f32 tensor.
pub fn read(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let bad = |reason: String| Error::Input { name: path.display().to_string(), reason };
    let npy =
        npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not a valid .npy file: {e}")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() != npyz::Order::C {
        return Err(bad(
            "Fortran-order arrays are not supported; save with np.ascontiguousarray".into()
        ));
    }
    let type_str = npy.dtype().descr();
    let data: Vec<f32> = match type_str.as_str() {
        "'<f4'" => npy.into_vec::<f32>().map_err(|e| bad(e.to_string()))?,
        "'<f8'" => npy
            .into_vec::<f64>()
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => return Err(bad(format!("dtype {other} is not supported; save float32"))),
    };
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad("the data does not match the declared shape (truncated file?)".into()));
    }
    Ok(Tensor::from_f32(shape, data))
}

/// Writes an f32 tensor as `.npy`.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    let data = t.as_f32()?;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let mut buf = Vec::new();
    {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut buf)
            .begin_nd()
            .map_err(|e| io_err(path, e))?;
        w.extend(data.iter().copied()).map_err(|e| io_err(path, e))?;
        w.finish().map_err(|e| io_err(path, e))?;
    }
    std::fs::write(path, buf).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("frugal-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.npy");
        let t = Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        write(&p, &t).unwrap();
        let r = read(&p).unwrap();
        assert_eq!(r.shape(), &[2, 3]);
        assert_eq!(r.as_f32().unwrap(), t.as_f32().unwrap());
        std::fs::write(&p, b"not npy").unwrap();
        assert!(read(&p).is_err());
    }
}
