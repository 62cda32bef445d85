//! Pointwise activations. They run standalone (`Op::Unary`) or fused into their producer as an
//! epilogue (`act` field of conv, transposed conv, batch norm, binary and dense ops); both paths
//! use [`Activation::apply`], so fusing never changes a bit.

use serde::{Deserialize, Serialize};

/// A pointwise activation function.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activation {
    /// max(x, 0)
    Relu,
    /// min(max(x, min), max)
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// x if x >= 0 else alpha * x
    LeakyRelu {
        /// Negative slope.
        alpha: f32,
    },
    /// 1 / (1 + exp(-x))
    Sigmoid,
    /// max(0, min(1, alpha * x + beta))
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// x * max(0, min(1, x / 6 + 1/2))
    HardSwish,
    /// tanh(x)
    Tanh,
    /// erf(x)
    Erf,
}

impl Activation {
    /// The ONNX operator name.
    pub fn onnx_name(&self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::Clip { .. } => "Clip",
            Activation::LeakyRelu { .. } => "LeakyRelu",
            Activation::Sigmoid => "Sigmoid",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::HardSwish => "HardSwish",
            Activation::Tanh => "Tanh",
            Activation::Erf => "Erf",
        }
    }

    /// Applies the activation to one value. The single definition every CPU path uses.
    #[inline(always)]
    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Activation::Relu => max_of(x, 0.0),
            Activation::Clip { min, max } => min_of(max_of(x, min), max),
            Activation::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::HardSigmoid { alpha, beta } => unit_clamp(alpha * x + beta),
            Activation::HardSwish => x * unit_clamp(x * (1.0 / 6.0) + 0.5),
            Activation::Tanh => x.tanh(),
            Activation::Erf => libm_erff(x),
        }
    }

    /// Whether the activation is made of multiplies, adds, compares and selects only (Relu,
    /// Clip, LeakyRelu, HardSigmoid, HardSwish), which SIMD kernels can apply in registers with
    /// the bits of [`Activation::apply`].
    pub fn is_piecewise_linear(&self) -> bool {
        !matches!(self, Activation::Sigmoid | Activation::Tanh | Activation::Erf)
    }

    /// Applies the activation in place over a slice (the variant chosen once, so the loop
    /// vectorises).
    pub fn apply_slice(&self, xs: &mut [f32]) {
        match *self {
            Activation::Relu => xs.iter_mut().for_each(|x| *x = max_of(*x, 0.0)),
            Activation::Clip { min, max } => {
                xs.iter_mut().for_each(|x| *x = min_of(max_of(*x, min), max))
            }
            Activation::LeakyRelu { alpha } => {
                xs.iter_mut().for_each(|x| *x = if *x >= 0.0 { *x } else { alpha * *x })
            }
            Activation::HardSigmoid { alpha, beta } => {
                xs.iter_mut().for_each(|x| *x = unit_clamp(alpha * *x + beta))
            }
            Activation::HardSwish => {
                xs.iter_mut().for_each(|x| *x = *x * unit_clamp(*x * (1.0 / 6.0) + 0.5))
            }
            _ => xs.iter_mut().for_each(|x| *x = self.apply(*x)),
        }
    }
}

/// `x` if it is greater than `y`, else `y` (so `y` for NaN and for equal zeros): exactly the
/// x86 `maxps` and the NEON/GPU select, which SIMD epilogues can use and still match this bit for
/// bit. `f32::max` leaves the sign of an equal zero unspecified.
#[inline(always)]
pub fn max_of(x: f32, y: f32) -> f32 {
    if x > y {
        x
    } else {
        y
    }
}

/// `min_of(max_of(x, 0), 1)`.
#[inline(always)]
pub fn unit_clamp(x: f32) -> f32 {
    min_of(max_of(x, 0.0), 1.0)
}

/// `x` if it is less than `y`, else `y`: exactly the x86 `minps`.
#[inline(always)]
pub fn min_of(x: f32, y: f32) -> f32 {
    if x < y {
        x
    } else {
        y
    }
}

/// Numerically stable logistic function.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// erf for f32, evaluated in f64 by libm so it stays within an ulp of onnxruntime's.
fn libm_erff(x: f32) -> f32 {
    libm::erf(x as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Reference values of erf from tables.
        let cases = [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (5.0, 0.999_999_999_998_462_5),
        ];
        for (x, want) in cases {
            let got = Activation::Erf.apply(x as f32) as f64;
            assert!((got - want).abs() < 1e-7, "erf({x})");
            let neg = Activation::Erf.apply(-x as f32) as f64;
            assert!((neg + want).abs() < 1e-7, "erf(-{x})");
        }
    }

    #[test]
    fn activations_follow_onnx_definitions() {
        assert_eq!(Activation::Relu.apply(-1.0), 0.0);
        assert_eq!(Activation::Clip { min: 0.0, max: 6.0 }.apply(7.0), 6.0);
        assert_eq!(Activation::LeakyRelu { alpha: 0.1 }.apply(-2.0), -0.2);
        assert_eq!(Activation::HardSwish.apply(3.0), 3.0);
        assert_eq!(Activation::HardSwish.apply(-3.0), -0.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert!((sigmoid(-100.0)).abs() < 1e-30);
    }
}
