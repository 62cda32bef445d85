//! Activations applied in AVX registers with the bits of [`Activation::apply`]: the same
//! multiplies, adds and selects in the same order (`maxps`/`minps` are `max_of`/`min_of`), never
//! fused. Only the piecewise-linear activations come here; the others run after the store.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use frugal_core::ops::Activation;

/// The activation a kernel may apply in registers, if `act` is one.
pub(crate) fn in_registers(act: Option<Activation>) -> Option<Activation> {
    act.filter(Activation::is_piecewise_linear)
}

/// The activation left to apply after the store, if `act` cannot run in registers.
pub(crate) fn after_store(act: &Option<Activation>) -> Option<&Activation> {
    act.as_ref().filter(|a| !a.is_piecewise_linear())
}

/// The even lanes of the 16 floats `lo, hi` (columns `0, 2, ..., 14` of a stride-2 run), in
/// order: a shuffle gives `[lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]`, a permute puts the 64-bit
/// pairs back as `0 2 1 3`.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn even8(lo: __m256, hi: __m256) -> __m256 {
    // SAFETY: AVX2 is available (caller).
    unsafe {
        let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even)))
    }
}

/// [`Activation::apply`] on eight lanes.
///
/// # Safety
/// AVX must be available; `act` must be piecewise linear (others come back unchanged).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn act8(act: Activation, x: __m256) -> __m256 {
    // SAFETY: AVX is available (caller).
    unsafe {
        let unit =
            |v: __m256| _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(1.0));
        match act {
            Activation::Relu => _mm256_max_ps(x, _mm256_setzero_ps()),
            Activation::Clip { min, max } => {
                _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(min)), _mm256_set1_ps(max))
            }
            Activation::LeakyRelu { alpha } => {
                // x >= 0 ? x : alpha * x (NaN takes the second arm, as in `apply`).
                let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_setzero_ps());
                _mm256_blendv_ps(_mm256_mul_ps(_mm256_set1_ps(alpha), x), x, ge)
            }
            Activation::HardSigmoid { alpha, beta } => {
                unit(_mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(alpha), x), _mm256_set1_ps(beta)))
            }
            Activation::HardSwish => {
                let t =
                    _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.0 / 6.0)), _mm256_set1_ps(0.5));
                _mm256_mul_ps(x, unit(t))
            }
            Activation::Sigmoid | Activation::Tanh | Activation::Erf => x,
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn lanes_match_apply_bit_for_bit() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let acts = [
            Activation::Relu,
            Activation::Clip { min: 0.0, max: 6.0 },
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
            Activation::HardSwish,
        ];
        let xs = [-7.5f32, -3.0, -0.0, 0.0, 1e-40, 2.9999, 3.0, 6.5, f32::NAN, f32::INFINITY];
        for act in acts {
            for chunk in xs.chunks(8) {
                let mut lanes = [0.0f32; 8];
                lanes[..chunk.len()].copy_from_slice(chunk);
                let mut out = [0.0f32; 8];
                // SAFETY: AVX2 detected above.
                unsafe {
                    _mm256_storeu_ps(out.as_mut_ptr(), act8(act, _mm256_loadu_ps(lanes.as_ptr())))
                };
                for (x, y) in lanes.iter().zip(out) {
                    assert_eq!(act.apply(*x).to_bits(), y.to_bits(), "{act:?} at {x}");
                }
            }
        }
    }
}

/// The 8 x 8 transpose: `out[j]` lane `c` is `rows[c]` lane `j`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: AVX is enabled (inlined into the kernel's target features).
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}
