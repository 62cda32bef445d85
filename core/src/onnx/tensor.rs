//! TensorProto decoding: raw little-endian data (zero-copy), typed repeated fields, and external
//! data files (memory-mapped once per file).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use half::f16;

use super::proto::tensor_proto::{DataLocation, DataType};
use super::proto::TensorProto;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// The frugal dtype of an ONNX `TensorProto.DataType` code, for the types frugal stores.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    match DataType::try_from(code).ok()? {
        DataType::Float | DataType::Double => Some(DType::F32),
        DataType::Float16 => Some(DType::F16),
        DataType::Int64 => Some(DType::I64),
        DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint16 => Some(DType::I32),
        DataType::Uint8 | DataType::Bool => Some(DType::U8),
        _ => None,
    }
}

/// ONNX code of a frugal dtype.
pub fn dtype_to_onnx(dt: DType) -> i32 {
    (match dt {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::I64 => DataType::Int64,
        DType::I32 => DataType::Int32,
        DType::U8 => DataType::Uint8,
    }) as i32
}

/// Memory maps of external data files, opened lazily and kept for the import.
#[derive(Debug)]
pub struct ExternalFiles {
    dir: PathBuf,
    maps: HashMap<PathBuf, Bytes>,
}

impl ExternalFiles {
    /// External data paths are resolved against `dir` (the model file's folder).
    pub fn new(dir: PathBuf) -> Self {
        ExternalFiles { dir, maps: HashMap::new() }
    }

    fn slice(&mut self, location: &str, offset: usize, length: Option<usize>) -> Result<Bytes> {
        let rel = Path::new(location);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(Error::malformed(format!(
                "external data location '{location}' must be a relative path inside the model's folder"
            )));
        }
        let path = self.dir.join(rel);
        if !self.maps.contains_key(&path) {
            let file = std::fs::File::open(&path)
                .map_err(|e| Error::Io { path: path.clone(), cause: e })?;
            // SAFETY: the map is read-only; frugal assumes model files are not modified while in
            // use, as every engine that memory-maps weights does.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| Error::Io { path: path.clone(), cause: e })?;
            self.maps.insert(path.clone(), Bytes::from_owner(map));
        }
        let data = &self.maps[&path];
        let end = match length {
            Some(l) => offset.checked_add(l),
            None => Some(data.len()),
        };
        match end {
            Some(end) if offset <= end && end <= data.len() => Ok(data.slice(offset..end)),
            _ => Err(Error::malformed(format!(
                "external data '{location}' is {} bytes, the model asks for bytes {offset}..{}",
                data.len(),
                end.map_or("overflow".to_string(), |e| e.to_string())
            ))),
        }
    }
}

/// Decodes a TensorProto. `external` resolves external data (None: such tensors are an error).
pub fn tensor_from_proto(t: &TensorProto, external: Option<&mut ExternalFiles>) -> Result<Tensor> {
    let name = t.name.clone().unwrap_or_default();
    let code = t.data_type.unwrap_or(0);
    let dt = dtype_from_onnx(code).ok_or_else(|| {
        Error::malformed(format!(
            "tensor '{name}' has data type {} which frugal does not read",
            DataType::try_from(code)
                .map_or(format!("code {code}"), |d| d.as_str_name().to_string())
        ))
    })?;
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| Error::malformed(format!("tensor '{name}' has dim {d}")))
        })
        .collect::<Result<_>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::malformed(format!("tensor '{name}' shape {shape:?} overflows")))?;
    let src = DataType::try_from(code).unwrap_or(DataType::Undefined);

    if t.data_location == Some(DataLocation::External as i32) {
        let ext = external.ok_or_else(|| {
            Error::malformed(format!("tensor '{name}' uses external data where none is allowed"))
        })?;
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(k))
                .and_then(|e| e.value.clone())
        };
        let location = get("location").ok_or_else(|| {
            Error::malformed(format!("tensor '{name}' has external data without a location"))
        })?;
        let parse = |k: &str| -> Result<Option<usize>> {
            get(k)
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| Error::malformed(format!("tensor '{name}': bad {k} '{v}'")))
                })
                .transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = parse("length")?;
        let raw = ext.slice(&location, offset, length)?;
        return from_raw(src, dt, shape, n, raw, &name);
    }
    if let Some(raw) = &t.raw_data {
        if !raw.is_empty() || n == 0 {
            return from_raw(src, dt, shape, n, raw.clone(), &name);
        }
    }
    let check = |len: usize| -> Result<()> {
        if len != n {
            return Err(Error::malformed(format!(
                "tensor '{name}' of shape {shape:?} stores {len} values"
            )));
        }
        Ok(())
    };
    match src {
        DataType::Float => {
            check(t.float_data.len())?;
            Ok(Tensor::from_f32(shape, t.float_data.clone()))
        }
        DataType::Double => {
            check(t.double_data.len())?;
            Ok(Tensor::from_f32(shape, t.double_data.iter().map(|&v| v as f32).collect()))
        }
        DataType::Int64 => {
            check(t.int64_data.len())?;
            Ok(Tensor::from_i64(shape, t.int64_data.clone()))
        }
        DataType::Float16 => {
            check(t.int32_data.len())?;
            Ok(Tensor::from_f16(
                shape,
                t.int32_data.iter().map(|&v| f16::from_bits(v as u16)).collect(),
            ))
        }
        DataType::Uint8 | DataType::Bool => {
            check(t.int32_data.len())?;
            Ok(Tensor::from_u8(shape, t.int32_data.iter().map(|&v| v as u8).collect()))
        }
        _ => {
            check(t.int32_data.len())?;
            Ok(Tensor::from_i32(shape, t.int32_data.clone()))
        }
    }
}

/// Tensor from raw little-endian bytes, widening the integer and double types frugal folds.
fn from_raw(
    src: DataType,
    dt: DType,
    shape: Vec<usize>,
    n: usize,
    raw: Bytes,
    name: &str,
) -> Result<Tensor> {
    let want = |es: usize| -> Result<()> {
        if raw.len() != n * es {
            return Err(Error::malformed(format!(
                "tensor '{name}' of shape {shape:?} needs {} bytes, the file holds {} (truncated?)",
                n * es,
                raw.len()
            )));
        }
        Ok(())
    };
    match src {
        DataType::Double => {
            want(8)?;
            let v = raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect();
            Ok(Tensor::from_f32(shape, v))
        }
        DataType::Int16 => {
            want(2)?;
            let v = raw.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i32).collect();
            Ok(Tensor::from_i32(shape, v))
        }
        DataType::Uint16 => {
            want(2)?;
            let v = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as i32).collect();
            Ok(Tensor::from_i32(shape, v))
        }
        DataType::Int8 => {
            want(1)?;
            Ok(Tensor::from_i32(shape, raw.iter().map(|&b| b as i8 as i32).collect()))
        }
        _ => {
            want(dt.size())?;
            Tensor::from_le_bytes(dt, shape, raw)
        }
    }
}

/// A TensorProto holding `t` as raw data.
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype_to_onnx(t.dtype())),
        raw_data: Some(Bytes::copy_from_slice(t.bytes())),
        ..Default::default()
    }
}
