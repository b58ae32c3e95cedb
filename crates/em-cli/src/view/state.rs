//! The neuroglancer viewer state `em view` opens with, and the URL that carries it.

use serde_json::{json, Map, Value};

/// A layer of the state.
pub(crate) struct Layer {
    /// Its name in the layer panel.
    pub(crate) name: String,
    /// `image` or `segmentation`.
    pub(crate) kind: &'static str,
    /// The data source, e.g. `zarr2://http://127.0.0.1:8000/data/image`.
    pub(crate) source: String,
    /// Segment ids to show (skeleton layers); `None` shows every segment of a volume.
    pub(crate) segments: Option<Vec<u64>>,
}

/// What the state describes.
pub(crate) struct StateSpec {
    /// Voxel size `(z, y, x)` in nm: the viewer's dimensions.
    pub(crate) voxel_size: [f64; 3],
    /// Voxel coordinates `(z, y, x)` of the view's centre.
    pub(crate) centre: [f64; 3],
    /// Shape `(z, y, x)` of the image, for the zoom.
    pub(crate) shape: [u64; 3],
    /// The layers, bottom first.
    pub(crate) layers: Vec<Layer>,
}

/// Pixels a cross-section panel is assumed to span: the zoom fits the volume's larger
/// side into about this many.
const PANEL_PIXELS: f64 = 400.0;

/// The viewer state: dimensions `x, y, z` in metres (the names and units that
/// neuroglancer gives zarr arrays named `z, y, x` in nm and precomputed volumes, so the
/// layers share the viewer's space), centred on the volume, zoomed to fit a small volume
/// and to one voxel per pixel for a large one (which would otherwise fetch every chunk).
pub(crate) fn state(spec: &StateSpec) -> Value {
    let [vz, vy, vx] = spec.voxel_size;
    // Listed x, y, z: the first two dimensions are the xy panel's.
    let mut dimensions = Map::new();
    dimensions.insert("x".into(), json!([vx / 1e9, "m"]));
    dimensions.insert("y".into(), json!([vy / 1e9, "m"]));
    dimensions.insert("z".into(), json!([vz / 1e9, "m"]));
    let [cz, cy, cx] = spec.centre;
    let [sz, sy, sx] = spec.shape;
    let largest = sx.max(sy) as f64;
    let cross_section_scale = (largest / PANEL_PIXELS).min(1.0);
    // The 3-D view's scale is in the same units; half the largest side frames the volume
    // in its perspective view.
    let extent = (sx as f64 * vx).max(sy as f64 * vy).max(sz as f64 * vz) / vx;
    let layers: Vec<Value> = spec
        .layers
        .iter()
        .map(|l| {
            let mut layer = json!({"type": l.kind, "name": l.name, "source": l.source});
            if let Some(ids) = &l.segments {
                layer["segments"] = json!(ids.iter().map(u64::to_string).collect::<Vec<_>>());
            }
            layer
        })
        .collect();
    json!({
        "dimensions": Value::Object(dimensions),
        "position": [cx, cy, cz],
        "crossSectionScale": cross_section_scale,
        "projectionScale": extent * 0.5,
        "layers": layers,
        "layout": "4panel",
        "showAxisLines": false,
        "showDefaultAnnotations": false,
    })
}

/// Bytes kept as they are in the URL fragment: unreserved characters and a few
/// delimiters neuroglancer's own URLs leave unescaped.
fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~!*'():,/@".contains(&b)
}

/// Percent-encodes the state JSON for the fragment after `#!`.
pub(crate) fn encode_fragment(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    for b in json.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The viewer URL: `client` (ending in `/`) then `#!` and the encoded state.
pub(crate) fn url(client: &str, state: &Value) -> String {
    format!("{client}#!{}", encode_fragment(&state.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_are_x_y_z_in_metres() {
        let s = state(&StateSpec {
            voxel_size: [40.0, 4.0, 4.0],
            centre: [16.0, 64.0, 64.0],
            shape: [32, 128, 128],
            layers: vec![],
        });
        let dims: Vec<&String> = s["dimensions"].as_object().unwrap().keys().collect();
        assert_eq!(dims, ["x", "y", "z"]);
        assert_eq!(s["dimensions"]["z"], json!([4e-8, "m"]));
        assert_eq!(s["position"], json!([64.0, 64.0, 16.0]));
        let u = url("http://h/", &s);
        assert!(
            u.starts_with("http://h/#!%7B%22dimensions%22:%7B%22x%22:%5B"),
            "{u}"
        );
        assert!(!u.contains(' ') && !u.contains('"'));
    }
}
