//! zarr node attributes (v2 `.zattrs`, v3 `zarr.json` `attributes`) and the OME-NGFF
//! fields inside them: 0.4 at the top of a v2 group's attributes, 0.5 under `ome` in a v3
//! group's.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::atomic::write_atomic;
use crate::{IoError, Result, ZarrVersion};

/// A JSON object of attributes.
pub(crate) type Attrs = Map<String, Value>;

const OME: &str = "OME-NGFF";

/// Whether a node is an array or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Array,
    Group,
}

/// The metadata of one zarr node on disk.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) version: ZarrVersion,
    pub(crate) kind: NodeKind,
    pub(crate) attrs: Attrs,
    /// The file the attributes live in, for messages and rewrites.
    pub(crate) attrs_file: PathBuf,
}

fn read_json(file: &Path, format: &'static str) -> Result<Value> {
    let text = fs::read_to_string(file).map_err(IoError::io(file))?;
    serde_json::from_str(&text)
        .map_err(|e| IoError::corrupt(file, format, format!("invalid JSON: {e}")))
}

fn as_object(value: Value, file: &Path, what: &str) -> Result<Attrs> {
    match value {
        Value::Object(m) => Ok(m),
        other => Err(IoError::corrupt(
            file,
            "zarr",
            format!("{what} must be a JSON object, found {other}"),
        )),
    }
}

/// The node at `dir`, or `None` where no zarr metadata is there.
pub(crate) fn read_node(dir: &Path) -> Result<Option<Node>> {
    let v3 = dir.join("zarr.json");
    if v3.is_file() {
        let doc = as_object(read_json(&v3, "zarr")?, &v3, "zarr.json")?;
        let kind = match doc.get("node_type").and_then(Value::as_str) {
            Some("array") => NodeKind::Array,
            Some("group") => NodeKind::Group,
            other => {
                return Err(IoError::corrupt(
                    &v3,
                    "zarr",
                    format!("node_type must be \"array\" or \"group\", found {other:?}"),
                ))
            }
        };
        let attrs = match doc.get("attributes") {
            None | Some(Value::Null) => Attrs::new(),
            Some(a) => as_object(a.clone(), &v3, "attributes")?,
        };
        return Ok(Some(Node {
            version: ZarrVersion::V3,
            kind,
            attrs,
            attrs_file: v3,
        }));
    }
    let kind = if dir.join(".zarray").is_file() {
        NodeKind::Array
    } else if dir.join(".zgroup").is_file() {
        NodeKind::Group
    } else {
        return Ok(None);
    };
    let file = dir.join(".zattrs");
    let attrs = if file.is_file() {
        as_object(read_json(&file, "zarr")?, &file, ".zattrs")?
    } else {
        Attrs::new()
    };
    Ok(Some(Node {
        version: ZarrVersion::V2,
        kind,
        attrs,
        attrs_file: file,
    }))
}

/// Writes group metadata with `attrs` into `dir`, each file atomically.
pub(crate) fn write_group(dir: &Path, version: ZarrVersion, attrs: &Attrs) -> Result<()> {
    fs::create_dir_all(dir).map_err(IoError::io(dir))?;
    match version {
        ZarrVersion::V3 => {
            let doc = json!({"zarr_format": 3, "node_type": "group", "attributes": attrs});
            write_json(&dir.join("zarr.json"), &doc)
        }
        ZarrVersion::V2 => {
            write_json(&dir.join(".zgroup"), &json!({"zarr_format": 2}))?;
            write_json(&dir.join(".zattrs"), &Value::Object(attrs.clone()))
        }
    }
}

/// Adds `extra` to the attributes of the array in `dir` (keys in `extra` win).
pub(crate) fn merge_array_attrs(dir: &Path, version: ZarrVersion, extra: &Attrs) -> Result<()> {
    match version {
        ZarrVersion::V3 => {
            let file = dir.join("zarr.json");
            let mut doc = as_object(read_json(&file, "zarr")?, &file, "zarr.json")?;
            let attrs = doc
                .entry("attributes")
                .or_insert_with(|| Value::Object(Attrs::new()));
            if !attrs.is_object() {
                *attrs = Value::Object(Attrs::new());
            }
            if let Value::Object(a) = attrs {
                a.extend(extra.clone());
            }
            write_json(&file, &Value::Object(doc))
        }
        ZarrVersion::V2 => {
            let file = dir.join(".zattrs");
            let mut attrs = if file.is_file() {
                as_object(read_json(&file, "zarr")?, &file, ".zattrs")?
            } else {
                Attrs::new()
            };
            attrs.extend(extra.clone());
            write_json(&file, &Value::Object(attrs))
        }
    }
}

fn write_json(file: &Path, doc: &Value) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
    write_atomic(file, &bytes)
}

/// The OME-NGFF fields of a node's attributes: under `ome` (0.5) or at the top (0.4 and
/// before).
pub(crate) fn ome_fields(attrs: &Attrs) -> &Attrs {
    match attrs.get("ome") {
        Some(Value::Object(ome)) => ome,
        _ => attrs,
    }
}

/// Group attributes holding `fields` as OME-NGFF 0.4 (zarr v2) or 0.5 (zarr v3) asks:
/// 0.4 puts a `version` into each multiscale and each `image-label`, 0.5 one `version`
/// beside them under `ome`.
pub(crate) fn ome_attrs(version: ZarrVersion, mut fields: Attrs) -> Attrs {
    let mut attrs = Attrs::new();
    match version {
        ZarrVersion::V2 => {
            for key in ["multiscales", "image-label"] {
                match fields.get_mut(key) {
                    Some(Value::Array(list)) => {
                        for item in list.iter_mut().filter_map(Value::as_object_mut) {
                            item.insert("version".into(), json!("0.4"));
                        }
                    }
                    Some(Value::Object(item)) => {
                        item.insert("version".into(), json!("0.4"));
                    }
                    _ => {}
                }
            }
            attrs.extend(fields);
        }
        ZarrVersion::V3 => {
            let mut ome = Attrs::new();
            ome.insert("version".into(), json!("0.5"));
            ome.extend(fields);
            attrs.insert("ome".into(), Value::Object(ome));
        }
    }
    attrs
}

/// The `multiscales` list of a node's OME fields, if it has one.
pub(crate) fn multiscales(node: &Node) -> Option<&Vec<Value>> {
    ome_fields(&node.attrs)
        .get("multiscales")
        .and_then(Value::as_array)
}

/// The dataset paths of the first multiscale of a node, if it has one.
pub(crate) fn dataset_paths(node: &Node) -> Option<Vec<String>> {
    let first = multiscales(node)?.first()?;
    Some(
        first
            .get("datasets")?
            .as_array()?
            .iter()
            .filter_map(|d| d.get("path")?.as_str())
            .map(normalize_key)
            .collect(),
    )
}

fn normalize_key(key: &str) -> String {
    key.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Nanometres per unit of a length unit of the OME-NGFF list (`None`: not a length).
fn nm_per(unit: &str) -> Option<f64> {
    Some(match unit {
        "angstrom" => 0.1,
        "attometer" => 1e-9,
        "centimeter" => 1e7,
        "decimeter" => 1e8,
        "exameter" => 1e27,
        "femtometer" => 1e-6,
        "foot" => 3.048e8,
        "gigameter" => 1e18,
        "hectometer" => 1e11,
        "inch" => 2.54e7,
        "kilometer" => 1e12,
        "megameter" => 1e15,
        "meter" => 1e9,
        "micrometer" => 1e3,
        "mile" => 1.609_344e12,
        "millimeter" => 1e6,
        "nanometer" => 1.0,
        "parsec" => 3.085_677_581_491_367e25,
        "petameter" => 1e24,
        "picometer" => 1e-3,
        "terameter" => 1e21,
        "yard" => 9.144e8,
        "yoctometer" => 1e-15,
        "yottameter" => 1e33,
        "zeptometer" => 1e-12,
        "zettameter" => 1e30,
        _ => return None,
    })
}

struct Axis {
    name: String,
    kind: Option<String>,
    unit: Option<String>,
}

fn parse_axes(ms: &Value, file: &Path) -> Result<Option<Vec<Axis>>> {
    let Some(axes) = ms.get("axes") else {
        return Ok(None);
    };
    let list = axes
        .as_array()
        .ok_or_else(|| IoError::corrupt(file, OME, "multiscales axes must be a list"))?;
    list.iter()
        .map(|a| match a {
            // 0.3 names axes by plain strings.
            Value::String(name) => Ok(Axis {
                name: name.clone(),
                kind: None,
                unit: None,
            }),
            Value::Object(o) => Ok(Axis {
                name: o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| IoError::corrupt(file, OME, "an axis has no name"))?
                    .to_string(),
                kind: o.get("type").and_then(Value::as_str).map(String::from),
                unit: o.get("unit").and_then(Value::as_str).map(String::from),
            }),
            other => Err(IoError::corrupt(
                file,
                OME,
                format!("an axis must be a name or an object, found {other}"),
            )),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The product of the `scale` transformations in a `coordinateTransformations` list (the
/// identity for none).
fn scale_of(transforms: Option<&Value>, ndim: usize, file: &Path) -> Result<Vec<f64>> {
    let mut scale = vec![1.0; ndim];
    let Some(transforms) = transforms else {
        return Ok(scale);
    };
    let list = transforms
        .as_array()
        .ok_or_else(|| IoError::corrupt(file, OME, "coordinateTransformations must be a list"))?;
    for t in list {
        if t.get("type").and_then(Value::as_str) != Some("scale") {
            continue;
        }
        let values = match t.get("scale") {
            Some(Value::Array(v)) => v,
            Some(other) => {
                return Err(IoError::corrupt(
                    file,
                    OME,
                    format!("scale must be a list of numbers, found {other}"),
                ))
            }
            None if t.get("path").is_some() => {
                return Err(IoError::corrupt(
                    file,
                    OME,
                    "a scale stored in a separate file is not supported",
                ))
            }
            None => {
                return Err(IoError::corrupt(
                    file,
                    OME,
                    "a scale transformation has no scale",
                ))
            }
        };
        if values.len() != ndim {
            return Err(IoError::corrupt(
                file,
                OME,
                format!("a scale has {} values for {ndim} axes", values.len()),
            ));
        }
        for (s, v) in scale.iter_mut().zip(values) {
            *s *= v.as_f64().ok_or_else(|| {
                IoError::corrupt(file, OME, format!("scale value {v} is not a number"))
            })?;
        }
    }
    Ok(scale)
}

/// The (z, y, x) voxel size in nm of the dataset `path` (`None`: the first) of a node's
/// first multiscale; `None` when the node has no multiscales, the dataset is not listed,
/// or fewer than three spatial axes exist.
pub(crate) fn multiscale_voxel_size(node: &Node, path: Option<&str>) -> Result<Option<[f64; 3]>> {
    let file = &node.attrs_file;
    let Some(list) = multiscales(node) else {
        return Ok(None);
    };
    let Some(ms) = list.first() else {
        return Err(IoError::corrupt(file, OME, "multiscales is an empty list"));
    };
    let datasets = ms
        .get("datasets")
        .and_then(Value::as_array)
        .ok_or_else(|| IoError::corrupt(file, OME, "the multiscale has no datasets list"))?;
    let dataset = match path {
        None => datasets.first(),
        Some(p) => {
            let want = normalize_key(p);
            datasets.iter().find(|d| {
                d.get("path")
                    .and_then(Value::as_str)
                    .is_some_and(|dp| normalize_key(dp) == want)
            })
        }
    };
    let Some(dataset) = dataset else {
        return Ok(None);
    };
    let Some(axes) = parse_axes(ms, file)? else {
        return Err(IoError::corrupt(file, OME, "the multiscale has no axes"));
    };
    let ndim = axes.len();
    let own = scale_of(dataset.get("coordinateTransformations"), ndim, file)?;
    let global = scale_of(ms.get("coordinateTransformations"), ndim, file)?;
    let by_name = ["z", "y", "x"].map(|n| axes.iter().position(|a| a.name == n));
    let picked: Vec<usize> = if by_name.iter().all(Option::is_some) {
        by_name.iter().flatten().copied().collect()
    } else {
        let spatial: Vec<usize> = (0..ndim)
            .filter(|&i| axes[i].kind.as_deref().is_none_or(|k| k == "space"))
            .collect();
        if spatial.len() < 3 {
            return Ok(None);
        }
        spatial[spatial.len() - 3..].to_vec()
    };
    let mut out = [0.0; 3];
    for (slot, &i) in out.iter_mut().zip(&picked) {
        // An axis without a unit is taken to be in nanometres, this project's unit.
        let per = match axes[i].unit.as_deref() {
            None => 1.0,
            Some(u) => nm_per(u).ok_or_else(|| {
                IoError::corrupt(
                    file,
                    OME,
                    format!("axis {} has unit {u:?}, not a length unit", axes[i].name),
                )
            })?,
        };
        *slot = own[i] * global[i] * per;
    }
    check_positive(out, file)?;
    Ok(Some(out))
}

fn check_positive(v: [f64; 3], file: &Path) -> Result<()> {
    if v.iter().all(|s| s.is_finite() && *s > 0.0) {
        Ok(())
    } else {
        Err(IoError::corrupt(
            file,
            OME,
            format!("voxel size {v:?} is not positive and finite"),
        ))
    }
}

/// funlib's voxel size attribute of an array: `resolution` (funlib.persistence before 0.5,
/// daisy) or `voxel_size` (later), the last three values being z, y, x.
pub(crate) fn funlib_voxel_size(node: &Node) -> Result<Option<[f64; 3]>> {
    let file = &node.attrs_file;
    for key in ["resolution", "voxel_size"] {
        let Some(value) = node.attrs.get(key) else {
            continue;
        };
        let list = value.as_array().ok_or_else(|| {
            IoError::corrupt(file, "zarr", format!("{key} must be a list, found {value}"))
        })?;
        let numbers = list
            .iter()
            .map(|v| {
                v.as_f64().ok_or_else(|| {
                    IoError::corrupt(file, "zarr", format!("{key} value {v} is not a number"))
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        if numbers.len() < 3 {
            return Ok(None);
        }
        let n = numbers.len();
        let out = [numbers[n - 3], numbers[n - 2], numbers[n - 1]];
        check_positive(out, file)?;
        return Ok(Some(out));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(attrs: Value) -> Node {
        Node {
            version: ZarrVersion::V2,
            kind: NodeKind::Group,
            attrs: attrs.as_object().cloned().unwrap(),
            attrs_file: PathBuf::from("g.zarr/.zattrs"),
        }
    }

    #[test]
    fn voxel_sizes_combine_scales_and_convert_units() {
        let n = node(json!({"multiscales": [{
            "version": "0.4",
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space", "unit": "nanometer"},
                {"name": "x", "type": "space"}
            ],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.04, 4, 4]}]},
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.04, 8, 8]}]}
            ],
            "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 1, 1]}]
        }]}));
        assert_eq!(
            multiscale_voxel_size(&n, None).unwrap(),
            Some([80.0, 4.0, 4.0])
        );
        assert_eq!(
            multiscale_voxel_size(&n, Some("./1")).unwrap(),
            Some([80.0, 8.0, 8.0])
        );
        assert_eq!(multiscale_voxel_size(&n, Some("2")).unwrap(), None);
    }

    #[test]
    fn bad_metadata_names_the_file() {
        let n = node(json!({"multiscales": [{
            "axes": ["z", "y", "x"],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 2]}]}]
        }]}));
        let e = multiscale_voxel_size(&n, None).unwrap_err().to_string();
        assert!(
            e.contains("g.zarr/.zattrs") && e.contains("2 values for 3 axes"),
            "{e}"
        );
        let n = node(json!({"multiscales": [{
            "axes": [{"name": "z", "unit": "second"}, {"name": "y"}, {"name": "x"}],
            "datasets": [{"path": "0"}]
        }]}));
        let e = multiscale_voxel_size(&n, None).unwrap_err().to_string();
        assert!(e.contains("not a length unit"), "{e}");
        let n = node(json!({"resolution": [40, "4", 4]}));
        assert!(funlib_voxel_size(&n).is_err());
        let n = node(json!({"resolution": [3, 40, 4, 4]}));
        assert_eq!(funlib_voxel_size(&n).unwrap(), Some([40.0, 4.0, 4.0]));
    }

    #[test]
    fn ome_attrs_follow_each_version() {
        let mut fields = Attrs::new();
        fields.insert("multiscales".into(), json!([{"name": "a"}]));
        fields.insert("image-label".into(), json!({}));
        let v2 = ome_attrs(ZarrVersion::V2, fields.clone());
        assert_eq!(v2["multiscales"][0]["version"], "0.4");
        assert_eq!(v2["image-label"]["version"], "0.4");
        let v3 = ome_attrs(ZarrVersion::V3, fields);
        assert_eq!(v3["ome"]["version"], "0.5");
        assert!(v3["ome"]["multiscales"][0].get("version").is_none());
        assert!(v3["ome"]["image-label"].get("version").is_none());
    }
}
