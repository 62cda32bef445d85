//! Spatial resizing: Resize (opset 10+) and Upsample (opset 7-9), nearest and (bi)linear.

use serde::{Deserialize, Serialize};

use super::{Export, Op};
use crate::error::{Error, Result};
use crate::onnx::export::attr_string;
use crate::onnx::{Arg, OnnxNode};
use crate::tensor::Tensor;

/// Interpolation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear.
    Linear,
}

/// How an output coordinate maps back to the input (ONNX `coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordMode {
    /// `(x + 0.5) / scale - 0.5`
    HalfPixel,
    /// Like half-pixel, but 0 when the output length is 1.
    PytorchHalfPixel,
    /// `x * (in - 1) / (out - 1)`
    AlignCorners,
    /// `x / scale`
    Asymmetric,
    /// `(x + 0.5) / scale` (nearest only in practice).
    TfHalfPixelForNearest,
}

/// Rounding of the source coordinate in nearest mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NearestMode {
    /// Round half down.
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    /// floor
    Floor,
    /// ceil
    Ceil,
}

/// Resize of the two spatial axes of an NCHW tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resize {
    /// Interpolation.
    pub mode: ResizeMode,
    /// Coordinate transformation.
    pub coord: CoordMode,
    /// Rounding in nearest mode.
    pub nearest: NearestMode,
    /// Scale factors along H and W used by the coordinate transform.
    pub scales: [f32; 2],
    /// Output height and width.
    pub size: [usize; 2],
}

impl Resize {
    /// Output shape.
    pub fn infer(&self, x: &[usize]) -> Result<Vec<usize>> {
        if x.len() != 4 {
            return Err(Error::shape("Resize", format!("expects a 4-D input, got {x:?}")));
        }
        Ok(vec![x[0], x[1], self.size[0], self.size[1]])
    }

    /// Source coordinate of output coordinate `o` along axis `a` (0 = H, 1 = W), before
    /// rounding or interpolation. `len_in` is the input length along that axis.
    #[inline]
    pub fn source_coord(&self, a: usize, o: usize, len_in: usize) -> f32 {
        let scale = self.scales[a];
        let out_len = self.size[a];
        let x = o as f32;
        match self.coord {
            CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
            CoordMode::PytorchHalfPixel => {
                if out_len > 1 {
                    (x + 0.5) / scale - 0.5
                } else {
                    0.0
                }
            }
            CoordMode::AlignCorners => {
                if out_len == 1 {
                    0.0
                } else {
                    x * (len_in as f32 - 1.0) / (out_len as f32 - 1.0)
                }
            }
            CoordMode::Asymmetric => x / scale,
            CoordMode::TfHalfPixelForNearest => (x + 0.5) / scale,
        }
    }

    /// Input index read by nearest mode for output coordinate `o` along axis `a`.
    #[inline]
    pub fn nearest_index(&self, a: usize, o: usize, len_in: usize) -> usize {
        let s = self.source_coord(a, o, len_in);
        let r = match self.nearest {
            NearestMode::RoundPreferFloor => {
                if s.fract() == 0.5 {
                    s.floor()
                } else {
                    s.round()
                }
            }
            NearestMode::RoundPreferCeil => s.round(),
            NearestMode::Floor => s.floor(),
            NearestMode::Ceil => s.ceil(),
        };
        (r.max(0.0) as usize).min(len_in - 1)
    }

    /// The two input indices and the weight of the second for linear mode along axis `a`.
    #[inline]
    pub fn linear_taps(&self, a: usize, o: usize, len_in: usize) -> (usize, usize, f32) {
        let s = self.source_coord(a, o, len_in).max(0.0);
        let i0 = (s.floor() as usize).min(len_in - 1);
        let i1 = (i0 + 1).min(len_in - 1);
        let w = if i0 == len_in - 1 { 0.0 } else { s - i0 as f32 };
        (i0, i1, w)
    }

    /// The two input indices an output coordinate reads along axis `a` and the weight of the
    /// second (nearest mode reads one index twice with weight 0). A zero weight reads the first
    /// tap twice, so a band needs only the rows it really interpolates.
    #[inline]
    pub fn taps(&self, a: usize, o: usize, len_in: usize) -> (usize, usize, f32) {
        match self.mode {
            ResizeMode::Nearest => {
                let i = self.nearest_index(a, o, len_in);
                (i, i, 0.0)
            }
            ResizeMode::Linear => {
                let (i0, i1, w) = self.linear_taps(a, o, len_in);
                (i0, if w == 0.0 { i0 } else { i1 }, w)
            }
        }
    }

    /// Input rows `[lo, hi)` output row `o` reads.
    pub fn rows_read(&self, o: usize, in_rows: usize) -> (usize, usize) {
        let (i0, i1, _) = self.taps(0, o, in_rows);
        (i0.min(i1), i0.max(i1) + 1)
    }

    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
        let x = n.shape(0)?;
        if x.len() != 4 {
            return Err(n.unsupported(format!("only 4-D (NCHW) inputs are resized, got {x:?}")));
        }
        let upsample = n.op_type() == "Upsample";
        let mode = match n.string("mode", "nearest")?.as_str() {
            "nearest" => ResizeMode::Nearest,
            "linear" | "bilinear" => ResizeMode::Linear,
            other => {
                return Err(
                    n.unsupported(format!("mode '{other}' (nearest and linear are supported)"))
                )
            }
        };
        // Before opset 11 the only transform was asymmetric with floor rounding.
        let legacy = upsample || n.opset < 11;
        let coord = if legacy {
            CoordMode::Asymmetric
        } else {
            match n.string("coordinate_transformation_mode", "half_pixel")?.as_str() {
                "half_pixel" => CoordMode::HalfPixel,
                "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
                "align_corners" => CoordMode::AlignCorners,
                "asymmetric" => CoordMode::Asymmetric,
                "tf_half_pixel_for_nearest" => CoordMode::TfHalfPixelForNearest,
                other => {
                    return Err(n.unsupported(format!("coordinate_transformation_mode '{other}'")))
                }
            }
        };
        let nearest = if legacy {
            NearestMode::Floor
        } else {
            match n.string("nearest_mode", "round_prefer_floor")?.as_str() {
                "round_prefer_floor" => NearestMode::RoundPreferFloor,
                "round_prefer_ceil" => NearestMode::RoundPreferCeil,
                "floor" => NearestMode::Floor,
                "ceil" => NearestMode::Ceil,
                other => return Err(n.unsupported(format!("nearest_mode '{other}'"))),
            }
        };
        if n.int("antialias", 0)? != 0 {
            return Err(n.unsupported("antialias=1"));
        }
        if n.string("keep_aspect_ratio_policy", "stretch")? != "stretch" {
            return Err(n.unsupported("keep_aspect_ratio_policy other than stretch"));
        }
        if let Some(axes) = n.ints("axes")? {
            let axes: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).collect();
            if axes != [2, 3] && axes != [0, 1, 2, 3] {
                return Err(
                    n.unsupported(format!("axes {axes:?}: only spatial axes may be resized"))
                );
            }
        }
        // Where scales and sizes come from depends on the version.
        let (scales, sizes) = if upsample {
            let s = if n.opset < 9 { n.floats("scales")? } else { n.const_floats(1)? };
            (s, None)
        } else if n.opset < 11 {
            (n.const_floats(1)?, None)
        } else {
            let s = n.const_floats(2)?.filter(|s| !s.is_empty());
            let z =
                if n.input_count() > 3 { n.const_ints(3)?.filter(|s| !s.is_empty()) } else { None };
            (s, z)
        };
        let spatial = |v: &[f32]| -> Result<[f32; 2]> {
            match v.len() {
                4 if v[0] == 1.0 && v[1] == 1.0 => Ok([v[2], v[3]]),
                2 => Ok([v[0], v[1]]),
                _ => Err(n.unsupported(format!("scales {v:?}: only H and W may be scaled"))),
            }
        };
        let (scales, size) = match (scales, sizes) {
            (_, Some(z)) => {
                let z: Vec<usize> = z.iter().map(|&d| d.max(0) as usize).collect();
                let size = match z.len() {
                    4 if z[0] == x[0] && z[1] == x[1] => [z[2], z[3]],
                    2 => [z[0], z[1]],
                    _ => return Err(n.unsupported(format!("sizes {z:?}: only H and W may change"))),
                };
                ([size[0] as f32 / x[2] as f32, size[1] as f32 / x[3] as f32], size)
            }
            (Some(s), None) => {
                let s = spatial(&s)?;
                if s.iter().any(|&v| v <= 0.0 || !v.is_finite()) {
                    return Err(n.shape_error(format!("invalid scales {s:?}")));
                }
                let size =
                    [(x[2] as f32 * s[0]).floor() as usize, (x[3] as f32 * s[1]).floor() as usize];
                (s, size)
            }
            (None, None) => return Err(n.shape_error("neither scales nor sizes given")),
        };
        if size.contains(&0) {
            return Err(n.shape_error(format!("output size {size:?} is empty")));
        }
        Ok((Op::Resize(Resize { mode, coord, nearest, scales, size }), vec![Arg::Input(0)]))
    }

    pub(crate) fn export(&self) -> Export {
        let coord = match self.coord {
            CoordMode::HalfPixel => "half_pixel",
            CoordMode::PytorchHalfPixel => "pytorch_half_pixel",
            CoordMode::AlignCorners => "align_corners",
            CoordMode::Asymmetric => "asymmetric",
            CoordMode::TfHalfPixelForNearest => "tf_half_pixel_for_nearest",
        };
        let nearest = match self.nearest {
            NearestMode::RoundPreferFloor => "round_prefer_floor",
            NearestMode::RoundPreferCeil => "round_prefer_ceil",
            NearestMode::Floor => "floor",
            NearestMode::Ceil => "ceil",
        };
        let mode = match self.mode {
            ResizeMode::Nearest => "nearest",
            ResizeMode::Linear => "linear",
        };
        Export::new("Resize")
            .attr(attr_string("mode", mode))
            .attr(attr_string("coordinate_transformation_mode", coord))
            .attr(attr_string("nearest_mode", nearest))
            .empty_input()
            .const_input(Tensor::from_f32(vec![4], vec![1.0, 1.0, self.scales[0], self.scales[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(mode: ResizeMode, coord: CoordMode, nearest: NearestMode, s: f32, out: usize) -> Resize {
        Resize { mode, coord, nearest, scales: [s, s], size: [out, out] }
    }

    #[test]
    fn nearest_asymmetric_floor_doubles_rows() {
        let z = r(ResizeMode::Nearest, CoordMode::Asymmetric, NearestMode::Floor, 2.0, 8);
        let idx: Vec<usize> = (0..8).map(|o| z.nearest_index(0, o, 4)).collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 2, 3, 3]);
    }

    #[test]
    fn linear_half_pixel_clamps_at_edges() {
        let z = r(ResizeMode::Linear, CoordMode::HalfPixel, NearestMode::Floor, 2.0, 8);
        assert_eq!(z.linear_taps(0, 0, 4), (0, 1, 0.0));
        let (i0, i1, w) = z.linear_taps(0, 1, 4);
        assert_eq!((i0, i1), (0, 1));
        assert!((w - 0.25).abs() < 1e-6);
        assert_eq!(z.linear_taps(0, 7, 4), (3, 3, 0.0));
    }
}
