//! Host tensors: model weights (zero-copy from a memory-mapped file where alignment allows),
//! constants folded at import, and the inputs and outputs a session exchanges with its caller.

use std::fmt;

use bytes::Bytes;
use half::f16;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Element types frugal knows. Activations are `F32` (or `F16` storage); integer types appear only
/// in constants that shape computations consume at import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 64-bit signed integer (shapes, indices).
    I64,
    /// 32-bit signed integer.
    I32,
    /// 8-bit unsigned integer / bool.
    U8,
}

impl DType {
    /// Bytes per element.
    #[inline]
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I64 => 8,
            DType::U8 => 1,
        }
    }

    /// Lower-case name, as in the plan JSON.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
        }
    }

    /// Whether activations of this type can flow through kernels.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense, row-major host tensor. The bytes are always aligned for the element type, so typed
/// views are free; they may borrow a memory-mapped model file (kept alive by [`Bytes`]).
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Bytes,
    /// The bytes are a read-only memory map of a model file (see [`Tensor::release_pages`]).
    mapped: bool,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>{:?}", self.dtype, self.shape)
    }
}

/// Owner adapter so a `Vec<T>` can back a [`Bytes`] without copying.
struct VecBytes<T: bytemuck::Pod>(Vec<T>);

impl<T: bytemuck::Pod> AsRef<[u8]> for VecBytes<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Product of the dims (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    fn from_pod<T: bytemuck::Pod + Send + 'static>(
        dtype: DType,
        shape: Vec<usize>,
        data: Vec<T>,
    ) -> Self {
        assert_eq!(numel(&shape), data.len(), "tensor data does not match its shape");
        Tensor { dtype, shape, bytes: Bytes::from_owner(VecBytes(data)), mapped: false }
    }

    /// An f32 tensor owning `data`. Panics if `data.len()` is not the product of `shape`
    /// (a programming error, never user input).
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self::from_pod(DType::F32, shape, data)
    }

    /// An f16 tensor owning `data`.
    pub fn from_f16(shape: Vec<usize>, data: Vec<f16>) -> Self {
        Self::from_pod(DType::F16, shape, data)
    }

    /// An i64 tensor owning `data`.
    pub fn from_i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        Self::from_pod(DType::I64, shape, data)
    }

    /// An i32 tensor owning `data`.
    pub fn from_i32(shape: Vec<usize>, data: Vec<i32>) -> Self {
        Self::from_pod(DType::I32, shape, data)
    }

    /// A u8 tensor owning `data`.
    pub fn from_u8(shape: Vec<usize>, data: Vec<u8>) -> Self {
        Self::from_pod(DType::U8, shape, data)
    }

    /// A tensor over little-endian `bytes` (e.g. a slice of a memory-mapped file). Zero-copy when
    /// the bytes are aligned for `dtype`, otherwise copied once into aligned memory.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, bytes: Bytes) -> Result<Self> {
        let want = numel(&shape) * dtype.size();
        if bytes.len() != want {
            return Err(Error::malformed(format!(
                "tensor of shape {shape:?} and type {dtype} needs {want} bytes, the file holds {}",
                bytes.len()
            )));
        }
        #[cfg(target_endian = "big")]
        compile_error!("frugal reads little-endian tensor data in place; big-endian hosts need a byte-swapping path");
        let aligned = (bytes.as_ptr() as usize).is_multiple_of(dtype.size());
        let bytes = if aligned { bytes } else { Self::realign(dtype, &bytes) };
        Ok(Tensor { dtype, shape, bytes, mapped: false })
    }

    fn realign(dtype: DType, b: &[u8]) -> Bytes {
        fn copy<T: bytemuck::Pod + Send>(b: &[u8]) -> Bytes {
            let mut v = vec![T::zeroed(); b.len() / std::mem::size_of::<T>()];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(b);
            Bytes::from_owner(VecBytes(v))
        }
        match dtype {
            DType::F32 => copy::<f32>(b),
            DType::F16 => copy::<u16>(b),
            DType::I64 => copy::<i64>(b),
            DType::I32 => copy::<i32>(b),
            DType::U8 => Bytes::copy_from_slice(b),
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        numel(&self.shape)
    }

    /// True for a tensor with a zero dimension.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the data in bytes.
    pub fn nbytes(&self) -> usize {
        self.bytes.len()
    }

    /// Raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Same data, new shape with the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Self> {
        if numel(&shape) != self.len() {
            return Err(Error::malformed(format!(
                "cannot reshape {:?} to {shape:?}: element counts differ",
                self.shape
            )));
        }
        Ok(Tensor { dtype: self.dtype, shape, bytes: self.bytes.clone(), mapped: self.mapped })
    }

    /// Whether the bytes lie in `range` of addresses (a memory map the caller made): marks the
    /// tensor as mapped, so that [`Tensor::release_pages`] may drop its pages.
    pub(crate) fn mark_if_in(&mut self, range: std::ops::Range<usize>) {
        let start = self.bytes.as_ptr() as usize;
        self.mapped |= !self.bytes.is_empty()
            && range.contains(&start)
            && start + self.bytes.len() <= range.end;
    }

    /// Whether the bytes are a read-only memory map of a model file.
    pub fn is_mapped(&self) -> bool {
        self.mapped
    }

    /// Tells the OS that this process will not read the tensor's bytes soon, when they are a
    /// memory-mapped model file: the whole pages inside them leave the resident set (a later
    /// read faults them back in from the file, unchanged). A backend that keeps its own
    /// repacked copy calls this so that a weight is not resident twice. Anything else: a no-op.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        if self.mapped {
            // SAFETY: `sysconf` has no preconditions.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
            let (start, end) =
                (self.bytes.as_ptr() as usize, self.bytes.as_ptr() as usize + self.bytes.len());
            if page == 0 {
                return;
            }
            let (first, last) = (start.next_multiple_of(page), end - end % page);
            if first < last {
                // SAFETY: the pages lie inside a read-only private file mapping that `bytes`
                // keeps alive (`mapped`); MADV_DONTNEED on such a mapping only drops resident
                // pages, which later reads fetch again from the file: no value changes.
                unsafe {
                    libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_DONTNEED)
                };
            }
        }
    }

    /// Typed view of an f32 tensor.
    pub fn as_f32(&self) -> Result<&[f32]> {
        self.typed(DType::F32)
    }

    /// Typed view of an i64 tensor.
    pub fn as_i64(&self) -> Result<&[i64]> {
        self.typed(DType::I64)
    }

    fn typed<T: bytemuck::Pod>(&self, want: DType) -> Result<&[T]> {
        if self.dtype != want {
            return Err(Error::malformed(format!(
                "expected a {want} tensor, found {} {:?}",
                self.dtype, self.shape
            )));
        }
        Ok(bytemuck::cast_slice(&self.bytes))
    }

    /// The values converted to f32 (any dtype).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let b = &self.bytes[..];
        match self.dtype {
            DType::F32 => bytemuck::cast_slice::<u8, f32>(b).to_vec(),
            DType::F16 => bytemuck::cast_slice::<u8, u16>(b)
                .iter()
                .map(|&x| f16::from_bits(x).to_f32())
                .collect(),
            DType::I64 => bytemuck::cast_slice::<u8, i64>(b).iter().map(|&x| x as f32).collect(),
            DType::I32 => bytemuck::cast_slice::<u8, i32>(b).iter().map(|&x| x as f32).collect(),
            DType::U8 => b.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The values converted to i64 (floats are truncated toward zero, as ONNX Cast does).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        let b = &self.bytes[..];
        match self.dtype {
            DType::F32 => bytemuck::cast_slice::<u8, f32>(b).iter().map(|&x| x as i64).collect(),
            DType::F16 => bytemuck::cast_slice::<u8, u16>(b)
                .iter()
                .map(|&x| f16::from_bits(x).to_f32() as i64)
                .collect(),
            DType::I64 => bytemuck::cast_slice::<u8, i64>(b).to_vec(),
            DType::I32 => bytemuck::cast_slice::<u8, i32>(b).iter().map(|&x| x as i64).collect(),
            DType::U8 => b.iter().map(|&x| x as i64).collect(),
        }
    }

    /// This tensor converted to `dtype` (f32, f16, i64 or i32).
    pub fn cast(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype {
            return self.clone();
        }
        let shape = self.shape.clone();
        match dtype {
            DType::F32 => Tensor::from_f32(shape, self.to_f32_vec()),
            DType::F16 => {
                Tensor::from_f16(shape, self.to_f32_vec().into_iter().map(f16::from_f32).collect())
            }
            DType::I64 => Tensor::from_i64(shape, self.to_i64_vec()),
            DType::I32 => {
                Tensor::from_i32(shape, self.to_i64_vec().into_iter().map(|x| x as i32).collect())
            }
            DType::U8 => {
                Tensor::from_u8(shape, self.to_i64_vec().into_iter().map(|x| x as u8).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_bytes_are_realigned_and_read_back() {
        let vals = [1.5f32, -2.0, 3.25];
        let mut raw = vec![0u8];
        raw.extend_from_slice(bytemuck::cast_slice(&vals));
        let b = Bytes::from(raw).slice(1..);
        let t = Tensor::from_le_bytes(DType::F32, vec![3], b).unwrap();
        assert_eq!(t.as_f32().unwrap(), &vals);
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        let b = Bytes::from(vec![0u8; 7]);
        assert!(Tensor::from_le_bytes(DType::F32, vec![2], b).is_err());
    }

    #[test]
    fn casts_convert_values() {
        let t = Tensor::from_i64(vec![2], vec![3, -4]);
        assert_eq!(t.cast(DType::F32).as_f32().unwrap(), &[3.0, -4.0]);
        let f = Tensor::from_f32(vec![2], vec![1.9, -1.9]);
        assert_eq!(f.to_i64_vec(), vec![1, -1]);
    }
}
