//! Loading PyTorch MedNeXt checkpoints (`.safetensors`, `.pt`/`.pth`) in MONAI or original
//! (MIC-DKFZ) key naming, detected from the keys.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use burn_store::{
    KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};

use crate::mednext::MedNeXt;
use crate::{ModelError, Result};

/// Key naming of a MedNeXt checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyNaming {
    /// MONAI: `enc_stages.i.j`, `down_blocks.i`, `up_blocks.(3−i)`, `out_blocks.(4−i)`.
    Monai,
    /// MIC-DKFZ: `enc_block_i.j`, `down_i`, `up_i`, `dec_block_i.j`, `out_i`.
    Original,
}

/// What a load did.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    /// The naming found in the file.
    pub naming: KeyNaming,
    /// Tensors loaded.
    pub applied: usize,
    /// Tensors stored in another float type and converted to float32 on load, per type
    /// (`("float16", 120)`); empty when the file holds float32.
    pub converted: Vec<(String, usize)>,
    /// Model parameters the file did not provide (they keep their values).
    pub missing: Vec<String>,
    /// File tensors the model has no place for.
    pub unused: Vec<String>,
    /// Shape or type mismatches.
    pub errors: Vec<String>,
}

/// The parsed JSON header of a safetensors file and the offset of its data, reading only
/// the header (weights are inspected before every load; their data is read once, by the
/// store).
fn safetensors_header(path: &Path) -> Result<(serde_json::Map<String, serde_json::Value>, usize)> {
    use std::io::Read;
    let name = path.display().to_string();
    let bad = |reason: String| ModelError::Checkpoint {
        path: name.clone(),
        reason,
    };
    let io = |source| ModelError::Io {
        path: name.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| bad("shorter than a safetensors header".into()))?;
    let len = u64::from_le_bytes(len);
    if len > file_len.saturating_sub(8) {
        return Err(bad("header runs past the end of the file".into()));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let map =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    Ok((map, 8 + len as usize))
}

/// A safetensors file's bytes with its parsed header and the offset of its data.
fn safetensors_file(
    path: &Path,
) -> Result<(Vec<u8>, serde_json::Map<String, serde_json::Value>, usize)> {
    let (map, data) = safetensors_header(path)?;
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok((bytes, map, data))
}

/// One float32 tensor of a safetensors file (e.g. a fixture's `test.input`), with its shape.
///
/// # Errors
/// I/O errors, a missing tensor or another dtype.
pub fn read_f32_tensor(path: &Path, tensor: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let (bytes, header, data) = safetensors_file(path)?;
    let bad = |reason: String| ModelError::Checkpoint {
        path: path.display().to_string(),
        reason,
    };
    let t = header
        .get(tensor)
        .ok_or_else(|| bad(format!("no tensor {tensor}")))?;
    if t["dtype"] != "F32" {
        return Err(bad(format!("{tensor} is {}, not F32", t["dtype"])));
    }
    let dims = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array().map_or(Vec::new(), |a| {
            a.iter()
                .filter_map(|d| d.as_u64())
                .map(|d| d as usize)
                .collect()
        })
    };
    let (shape, off) = (dims(&t["shape"]), dims(&t["data_offsets"]));
    let range = match off.as_slice() {
        &[a, b] => data + a..data + b,
        _ => return Err(bad(format!("{tensor} has no data offsets"))),
    };
    let raw = bytes
        .get(range)
        .ok_or_else(|| bad(format!("{tensor} runs past the end of the file")))?;
    Ok((
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        shape,
    ))
}

/// The element types a checkpoint may hold, by their safetensors names.
fn float_name(dtype: &str) -> Option<&'static str> {
    match dtype {
        "F32" => Some("float32"),
        "F16" => Some("float16"),
        "BF16" => Some("bfloat16"),
        "F64" => Some("float64"),
        _ => None,
    }
}

/// The safetensors name of a burn element type.
fn safetensors_name(dtype: DType) -> String {
    match dtype {
        DType::F64 => "F64".into(),
        DType::F32 | DType::Flex32 => "F32".into(),
        DType::F16 => "F16".into(),
        DType::BF16 => "BF16".into(),
        DType::I64 => "I64".into(),
        DType::I32 => "I32".into(),
        DType::I16 => "I16".into(),
        DType::I8 => "I8".into(),
        DType::U64 => "U64".into(),
        DType::U32 => "U32".into(),
        DType::U16 => "U16".into(),
        DType::U8 => "U8".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// Buffers that are not weights: integers there are expected and never loaded.
fn is_buffer(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// Whether any weight tensor is stored in a float type other than float32; integer and bool
/// tensors are refused (their message names the first).
fn needs_conversion<'a>(
    dtypes: impl Iterator<Item = (&'a str, String)>,
) -> std::result::Result<bool, String> {
    let mut needs = false;
    for (key, dtype) in dtypes.filter(|(k, _)| !is_buffer(k)) {
        if float_name(&dtype).is_none() {
            return Err(format!(
                "tensor {key} is {dtype}; weights must be floating point (float16, bfloat16, \
                 float32 or float64) — is this a checkpoint of a model?"
            ));
        }
        needs |= dtype != "F32";
    }
    Ok(needs)
}

/// Float32 safetensors bytes, and how many tensors of each other float type they came from.
type Converted = (Vec<u8>, Vec<(String, usize)>);

/// A checkpoint as float32 safetensors bytes, when it holds other float types (converted,
/// counted per type); `None` when it is float32 already. Integer or bool tensors are refused:
/// weights are real numbers, and a cast would load nonsense silently.
fn as_float32(path: &Path) -> Result<Option<Converted>> {
    let name = path.display().to_string();
    let bad = |reason: String| ModelError::Checkpoint {
        path: name.clone(),
        reason,
    };
    // (name, safetensors dtype, shape, raw little-endian bytes or a lazy PyTorch tensor)
    let mut tensors: Vec<(String, String, Vec<usize>, TensorData)> = Vec::new();
    if is_safetensors(path) {
        let (header, data) = safetensors_header(path)?;
        let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
        names.sort();
        let dtypes = names.iter().map(|k| {
            (
                k.as_str(),
                header[*k]["dtype"].as_str().unwrap_or("?").to_string(),
            )
        });
        if !needs_conversion(dtypes).map_err(bad)? {
            return Ok(None);
        }
        // Only a file to convert is read whole here.
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: name.clone(),
            source,
        })?;
        for key in names {
            let t = &header[key];
            let dtype = t["dtype"].as_str().unwrap_or("?").to_string();
            if is_buffer(key) {
                continue;
            }
            let dims: Vec<usize> = t["shape"].as_array().map_or(Vec::new(), |a| {
                a.iter()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as usize)
                    .collect()
            });
            let off: Vec<usize> = t["data_offsets"].as_array().map_or(Vec::new(), |a| {
                a.iter()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as usize)
                    .collect()
            });
            let raw = match off.as_slice() {
                &[a, b] if a <= b => bytes.get(data + a..data + b),
                _ => None,
            }
            .ok_or_else(|| bad(format!("{key} has bad data offsets")))?;
            let burn_dtype = match dtype.as_str() {
                "F16" => DType::F16,
                "BF16" => DType::BF16,
                "F64" => DType::F64,
                _ => DType::F32,
            };
            let expected = dims.iter().product::<usize>() * burn_dtype.size();
            if raw.len() != expected {
                return Err(bad(format!(
                    "{key}: {} bytes for a {dtype} tensor of shape {dims:?}",
                    raw.len()
                )));
            }
            let data = TensorData::from_bytes_vec(raw.to_vec(), dims.clone(), burn_dtype);
            tensors.push((key.clone(), dtype, dims, data));
        }
    } else {
        let reader =
            burn_store::pytorch::PytorchReader::new(path).map_err(|e| bad(e.to_string()))?;
        let mut names: Vec<&String> = reader.tensors().keys().collect();
        names.sort();
        let dtypes = names
            .iter()
            .map(|k| (k.as_str(), safetensors_name(reader.tensors()[*k].dtype)));
        if !needs_conversion(dtypes).map_err(bad)? {
            return Ok(None);
        }
        for key in names {
            if is_buffer(key) {
                continue;
            }
            let snapshot = &reader.tensors()[key];
            let data = snapshot
                .to_data()
                .map_err(|e| bad(format!("{key}: {e:?}")))?;
            tensors.push((
                key.clone(),
                safetensors_name(snapshot.dtype),
                snapshot.shape.to_vec(),
                data,
            ));
        }
    }
    // Re-encode as float32 safetensors: header (JSON, padded to 8 bytes), then the data.
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut header = serde_json::Map::new();
    let mut body: Vec<u8> = Vec::new();
    for (key, dtype, dims, data) in tensors {
        if dtype != "F32" {
            *counts
                .entry(float_name(&dtype).unwrap_or("?").to_string())
                .or_default() += 1;
        }
        let values = data
            .convert_dtype(DType::F32)
            .into_vec::<f32>()
            .map_err(|e| bad(format!("{key}: {e:?}")))?;
        let start = body.len();
        body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            key,
            serde_json::json!({"dtype": "F32", "shape": dims, "data_offsets": [start, body.len()]}),
        );
    }
    let mut head = serde_json::to_vec(&header).map_err(|e| bad(e.to_string()))?;
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + body.len());
    out.extend((head.len() as u64).to_le_bytes());
    out.extend(head);
    out.extend(body);
    Ok(Some((out, counts.into_iter().collect())))
}

/// Refuses weights with NaN or infinite values: such a model predicts NaN everywhere.
fn check_finite<B: Backend, M: ModuleSnapshot<B>>(model: &M, path: &Path) -> Result<()> {
    let mut bad: Vec<(String, usize)> = Vec::new();
    for snapshot in model.collect(None, None, false) {
        let Ok(data) = snapshot.to_data() else {
            continue;
        };
        if !matches!(
            data.dtype,
            DType::F32 | DType::F64 | DType::F16 | DType::BF16
        ) {
            continue;
        }
        let n = data
            .convert_dtype(DType::F32)
            .iter::<f32>()
            .filter(|v| !v.is_finite())
            .count();
        if n > 0 {
            bad.push((snapshot.full_path(), n));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let total: usize = bad.iter().map(|(_, n)| n).sum();
    let named: Vec<String> = bad
        .iter()
        .take(5)
        .map(|(k, n)| format!("{k} ({n})"))
        .collect();
    Err(ModelError::Checkpoint {
        path: path.display().to_string(),
        reason: format!(
            "{total} weight values are NaN or infinite, in {} tensors: {}{}; a model with them \
             predicts NaN everywhere (did the training diverge?)",
            bad.len(),
            named.join(", "),
            if bad.len() > 5 { ", …" } else { "" }
        ),
    })
}

/// Tensor names in a checkpoint.
///
/// # Errors
/// I/O errors and unreadable files.
pub fn checkpoint_keys(path: &Path) -> Result<Vec<String>> {
    Ok(checkpoint_shapes(path)?
        .into_iter()
        .map(|(k, _)| k)
        .collect())
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Applies a store to the model; the error as text (the stores' error types differ).
fn apply<B: Backend, S: burn_store::ModuleStore>(
    model: &mut MedNeXt<B>,
    mut store: S,
) -> std::result::Result<burn_store::ApplyResult, String>
where
    S::Error: std::fmt::Display,
{
    model.load_from(&mut store).map_err(|e| e.to_string())
}

/// Renames original keys (and GRN parameters) to this crate's module paths.
fn remapper(naming: KeyNaming) -> std::result::Result<KeyRemapper, regex::Error> {
    let mut r = KeyRemapper::new()
        .add_pattern(r"^(.*)\.global_resp_(gamma|beta)$", "$1.grn.global_resp_$2")?;
    if naming == KeyNaming::Original {
        r = r
            .add_pattern(r"^enc_block_(\d+)\.", "enc_stages.$1.")?
            .add_pattern(r"^down_(\d+)\.", "down_blocks.$1.")?;
        for i in 0..4 {
            r = r
                .add_pattern(format!(r"^up_{i}\."), format!("up_blocks.{}.", 3 - i))?
                .add_pattern(
                    format!(r"^dec_block_{i}\."),
                    format!("dec_stages.{}.", 3 - i),
                )?;
        }
        for i in 1..5 {
            r = r.add_pattern(format!(r"^out_{i}\."), format!("out_blocks.{}.", 4 - i))?;
        }
    }
    Ok(r)
}

/// Loads a PyTorch MedNeXt checkpoint into `model`. With `strict`, any missing parameter,
/// unused tensor (other than the original's `dummy_tensor`) or mismatch is an error that
/// lists them; otherwise they are reported.
///
/// # Errors
/// [`ModelError::Checkpoint`] for unreadable files or, when strict, an incomplete match.
pub fn load_mednext<B: Backend>(
    model: &mut MedNeXt<B>,
    path: &Path,
    strict: bool,
) -> Result<LoadReport> {
    let name = path.display().to_string();
    let keys = checkpoint_keys(path)?;
    let naming = if keys
        .iter()
        .any(|k| k.starts_with("enc_block_") || k.starts_with("dec_block_"))
    {
        KeyNaming::Original
    } else {
        KeyNaming::Monai
    };
    let remap = remapper(naming).map_err(|e| ModelError::Checkpoint {
        path: name.clone(),
        reason: e.to_string(),
    })?;
    let mismatch = |e: String| {
        // burn-store lists every mismatch; the first few say enough.
        let short: String = e.chars().take(600).collect();
        let more = if e.len() > short.len() { " …" } else { "" };
        ModelError::Checkpoint {
            path: name.clone(),
            reason: format!(
                "does not match this MedNeXt (check size, kernel, channels, deep supervision): {short}{more}"
            ),
        }
    };
    let converted = as_float32(path)?;
    let result = match &converted {
        Some((bytes, _)) => {
            let store = SafetensorsStore::from_bytes(Some(bytes.clone()))
                .with_from_adapter(PyTorchToBurnAdapter);
            apply(model, store.remap(remap).allow_partial(true).validate(true)).map_err(mismatch)?
        }
        None if is_safetensors(path) => {
            let store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter);
            apply(model, store.remap(remap).allow_partial(true).validate(true)).map_err(mismatch)?
        }
        None => {
            let store = PytorchStore::from_file(path);
            apply(model, store.remap(remap).allow_partial(true).validate(true)).map_err(mismatch)?
        }
    };
    check_finite(&*model, path)?;
    let report = LoadReport {
        naming,
        applied: result.applied.len(),
        converted: converted.map(|(_, c)| c).unwrap_or_default(),
        missing: result.missing.iter().map(|(p, _)| p.clone()).collect(),
        // Norm `weight`/`bias` are applied to burn's `gamma`/`beta` yet still listed unused.
        unused: result
            .unused
            .iter()
            .filter(|k| !k.ends_with("dummy_tensor"))
            .filter(|k| {
                let as_burn = k
                    .strip_suffix(".weight")
                    .map(|p| format!("{p}.gamma"))
                    .or_else(|| k.strip_suffix(".bias").map(|p| format!("{p}.beta")));
                !as_burn.is_some_and(|b| result.applied.contains(&b))
            })
            .cloned()
            .collect(),
        errors: result.errors.iter().map(|e| format!("{e:?}")).collect(),
    };
    if strict
        && (!report.missing.is_empty() || !report.unused.is_empty() || !report.errors.is_empty())
    {
        let list = |v: &[String]| {
            if v.len() > 8 {
                format!("{} … ({} in all)", v[..8].join(", "), v.len())
            } else {
                v.join(", ")
            }
        };
        return Err(ModelError::Checkpoint {
            path: name,
            reason: format!(
                "does not match this MedNeXt ({:?} naming): missing [{}], unused [{}], mismatched [{}]; check size, kernel, channels and deep supervision",
                naming,
                list(&report.missing),
                list(&report.unused),
                list(&report.errors)
            ),
        });
    }
    Ok(report)
}

/// The per-axis linear resampling matrix `m × n` of PyTorch's trilinear interpolation with
/// `align_corners=False` (for 3 → 5: rows [1,0,0], [.6,.4,0], [0,1,0], [0,.4,.6], [0,0,1]).
pub fn resample_matrix(n: usize, m: usize) -> Vec<Vec<f32>> {
    (0..m)
        .map(|o| {
            let x = ((o as f64 + 0.5) * n as f64 / m as f64 - 0.5).clamp(0.0, (n - 1) as f64);
            let i = (x.floor() as usize).min(n - 1);
            let t = x - i as f64;
            let mut row = vec![0f32; n];
            row[i] += (1.0 - t) as f32;
            if t > 0.0 && i + 1 < n {
                row[i + 1] += t as f32;
            }
            row
        })
        .collect()
}

/// Resamples `[C, 1, n, n, n]` depthwise kernels to side `m` (separable, per axis).
fn resample_kernels(data: &[f32], c: usize, n: usize, m: usize) -> Vec<f32> {
    let w = resample_matrix(n, m);
    let mut out = vec![0f32; c * m * m * m];
    for ch in 0..c {
        let src = &data[ch * n * n * n..(ch + 1) * n * n * n];
        let dst = &mut out[ch * m * m * m..(ch + 1) * m * m * m];
        for (a, wa) in w.iter().enumerate() {
            for (b, wb) in w.iter().enumerate() {
                for (d, wd) in w.iter().enumerate() {
                    let mut acc = 0f32;
                    for (i, &xa) in wa.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                        for (j, &xb) in wb.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                            for (k, &xd) in wd.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                                acc += xa * xb * xd * src[(i * n + j) * n + k];
                            }
                        }
                    }
                    dst[(a * m + b) * m + d] = acc;
                }
            }
        }
    }
    out
}

/// UpKern (MedNeXt paper): initialises `target` from a trained `source` of the same
/// architecture with a smaller kernel. Depthwise kernels are resampled trilinearly
/// (`align_corners=False`); every other tensor is copied. Returns the number of tensors set.
///
/// # Errors
/// [`ModelError::Checkpoint`] when the two models differ in anything but the kernel.
pub fn upkern<B: Backend>(source: &MedNeXt<B>, target: &mut MedNeXt<B>) -> Result<usize> {
    use burn::module::ParamId;
    use burn_store::TensorSnapshot;
    let wanted: std::collections::HashMap<String, Vec<usize>> = target
        .collect(None, None, false)
        .into_iter()
        .map(|s| (s.full_path(), s.shape.to_vec()))
        .collect();
    let bad = |reason: String| ModelError::Checkpoint {
        path: "UpKern source".into(),
        reason,
    };
    let mut snapshots = Vec::new();
    for s in source.collect(None, None, false) {
        let path = s.full_path();
        let from = s.shape.to_vec();
        let to = wanted
            .get(&path)
            .ok_or_else(|| bad(format!("{path} has no counterpart in the target")))?;
        let data = s.to_data().map_err(|e| bad(format!("{path}: {e:?}")))?;
        let data = if &from == to {
            data
        } else if from.len() == 5
            && from[1] == 1
            && to.len() == 5
            && to[..2] == from[..2]
            && from[2..].iter().all(|&k| k == from[2])
            && to[2..].iter().all(|&k| k == to[2])
        {
            let values: Vec<f32> = data.to_vec().map_err(|e| bad(format!("{path}: {e:?}")))?;
            burn::tensor::TensorData::new(
                resample_kernels(&values, from[0], from[2], to[2]),
                to.clone(),
            )
        } else {
            return Err(bad(format!(
                "{path}: shape {from:?} cannot become {to:?} (only depthwise kernels change)"
            )));
        };
        let path_stack = s.path_stack.clone().unwrap_or_default();
        let containers = s.container_stack.clone().unwrap_or_default();
        snapshots.push(TensorSnapshot::from_data(
            data,
            path_stack,
            containers,
            ParamId::new(),
        ));
    }
    let n = snapshots.len();
    let result = target.apply(snapshots, None, None, false);
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(bad(format!(
            "missing {:?}, errors {:?}",
            result.missing, result.errors
        )));
    }
    Ok(n)
}

/// Tensor names and shapes of a checkpoint.
///
/// # Errors
/// I/O errors and unreadable files.
pub fn checkpoint_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let name = path.display().to_string();
    let bad = |reason: String| ModelError::Checkpoint {
        path: name.clone(),
        reason,
    };
    if is_safetensors(path) {
        let (map, _) = safetensors_header(path)?;
        Ok(map
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .map(|(k, v)| {
                let shape = v["shape"].as_array().map_or(Vec::new(), |a| {
                    a.iter()
                        .filter_map(|d| d.as_u64())
                        .map(|d| d as usize)
                        .collect()
                });
                (k.clone(), shape)
            })
            .collect())
    } else {
        let reader =
            burn_store::pytorch::PytorchReader::new(path).map_err(|e| bad(e.to_string()))?;
        Ok(reader
            .tensors()
            .iter()
            .map(|(k, s)| (k.clone(), s.shape.to_vec()))
            .collect())
    }
}

/// Reads a MedNeXt's configuration off a checkpoint's tensor shapes: channels, width,
/// kernel, blocks and ratios per stage, deep supervision, GRN and the key naming. The
/// down-block convention cannot be told apart for size S (both agree); for others it follows
/// from the down blocks' expansion.
///
/// # Errors
/// [`ModelError::Checkpoint`] when the file is not a MedNeXt.
pub fn config_from_checkpoint(path: &Path) -> Result<crate::MedNeXtConfig> {
    let shapes: std::collections::HashMap<String, Vec<usize>> =
        checkpoint_shapes(path)?.into_iter().collect();
    let original = shapes.keys().any(|k| k.starts_with("enc_block_"));
    let bad = |what: &str| ModelError::Checkpoint {
        path: path.display().to_string(),
        reason: format!("not a MedNeXt checkpoint: {what}"),
    };
    let get = |k: &str| {
        shapes
            .get(k)
            .cloned()
            .ok_or_else(|| bad(&format!("no tensor {k}")))
    };
    let stem = get("stem.weight")?;
    let out = get("out_0.conv_out.weight")?;
    let (enc, down, dec) = if original {
        ("enc_block_", "down_", "dec_block_")
    } else {
        ("enc_stages.", "down_blocks.", "dec_stages.")
    };
    let conv1 = get(&format!("{enc}0.0.conv1.weight"))?;
    let (width, in_channels, kernel_size) = (stem[0], stem[1], conv1[2]);
    let count = |prefix: &str| {
        (0..)
            .take_while(|j| shapes.contains_key(&format!("{prefix}{j}.conv1.weight")))
            .count()
    };
    let ratio = |key: String, c: usize| -> Result<usize> { Ok(get(&key)?[0] / c.max(1)) };
    let mut blocks = [0usize; 9];
    let mut ratios = [0usize; 9];
    for i in 0..4 {
        blocks[i] = count(&format!("{enc}{i}."));
        ratios[i] = ratio(format!("{enc}{i}.0.conv2.weight"), width << i)?;
        // Decoder stage for level i sits at index 8 − i; MONAI lists it deepest first.
        let d = if original { i } else { 3 - i };
        blocks[8 - i] = count(&format!("{dec}{d}."));
        ratios[8 - i] = ratio(format!("{dec}{d}.0.conv2.weight"), width << i)?;
    }
    blocks[4] = count("bottleneck.");
    ratios[4] = ratio("bottleneck.0.conv2.weight".into(), width << 4)?;
    let down0 = ratio(format!("{down}0.conv2.weight"), width)?;
    let variant = if down0 == ratios[0] && ratios[0] != ratios[1] {
        crate::Variant::Monai
    } else {
        crate::Variant::Original
    };
    Ok(crate::MedNeXtConfig {
        in_channels,
        out_channels: out[1],
        width,
        kernel_size,
        ratios,
        blocks,
        deep_supervision: shapes
            .keys()
            .any(|k| k.starts_with("out_blocks.") || k.starts_with("out_1.")),
        variant,
        grn: shapes.keys().any(|k| k.contains("global_resp_gamma")),
    })
}

/// Writes a model's weights as safetensors with PyTorch names (MONAI's for MedNeXt), so that
/// PyTorch, `em infer` and [`load_weights`] read them. The file appears only once complete.
///
/// # Errors
/// [`ModelError::Checkpoint`] naming the file.
pub fn save_weights<B: Backend>(model: &crate::Model<B>, path: &Path) -> Result<()> {
    let fail = |reason: String| ModelError::Checkpoint {
        path: path.display().to_string(),
        reason,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let mut store =
        SafetensorsStore::from_file(&tmp).with_to_adapter(burn_store::BurnToPyTorchAdapter);
    let saved = match model {
        crate::Model::MedNeXt(m) => m.save_into(&mut store),
        crate::Model::RsUNet(m) => m.save_into(&mut store),
    };
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e.to_string()));
    }
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

/// Loads weights written by [`save_weights`] (or, for MedNeXt, any MONAI or original
/// checkpoint) into a model built from the same configuration; every parameter must match.
///
/// # Errors
/// [`ModelError::Checkpoint`] for unreadable files and mismatches (listed).
pub fn load_weights<B: Backend>(model: &mut crate::Model<B>, path: &Path) -> Result<()> {
    match model {
        crate::Model::MedNeXt(m) => load_mednext(m, path, true).map(|_| ()),
        crate::Model::RsUNet(m) => {
            let mut store = match as_float32(path)? {
                Some((bytes, _)) => SafetensorsStore::from_bytes(Some(bytes)),
                None => SafetensorsStore::from_file(path),
            }
            .with_from_adapter(PyTorchToBurnAdapter)
            .validate(true);
            let r = m
                .load_from(&mut store)
                .map_err(|e| ModelError::Checkpoint {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            check_finite(&*m, path)?;
            if !r.missing.is_empty() || !r.errors.is_empty() {
                return Err(ModelError::Checkpoint {
                    path: path.display().to_string(),
                    reason: format!(
                        "does not match this RSUNet: missing {:?}, mismatched {:?}",
                        r.missing, r.errors
                    ),
                });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cpu, MedNeXtConfig};

    #[test]
    fn upkern_kernel_values() {
        let tiny = |k| MedNeXtConfig {
            in_channels: 1,
            out_channels: 1,
            width: 2,
            kernel_size: k,
            ratios: [1; 9],
            blocks: [1; 9],
            deep_supervision: false,
            variant: crate::Variant::Monai,
            grn: false,
        };
        let device = Default::default();
        let k3 = tiny(3).init::<Cpu>(&device).unwrap();
        let mut k5 = tiny(5).init::<Cpu>(&device).unwrap();
        upkern(&k3, &mut k5).unwrap();
        fn values(p: &burn::module::Param<burn::tensor::Tensor<Cpu, 5>>) -> Vec<f32> {
            p.val().into_data().to_vec().unwrap()
        }
        let w3 = values(&k3.enc_stages[0][0].conv1.weight);
        let w5 = values(&k5.enc_stages[0][0].conv1.weight);
        let at3 = |c: usize, i: usize, j: usize, k: usize| w3[c * 27 + (i * 3 + j) * 3 + k];
        let at5 = |c: usize, i: usize, j: usize, k: usize| w5[c * 125 + (i * 5 + j) * 5 + k];
        for c in 0..2 {
            assert_eq!(at5(c, 2, 2, 2), at3(c, 1, 1, 1));
            assert_eq!(at5(c, 0, 4, 0), at3(c, 0, 2, 0));
            let mixed = 0.6 * at3(c, 0, 1, 1) + 0.4 * at3(c, 1, 1, 1);
            assert!((at5(c, 1, 2, 2) - mixed).abs() < 1e-6);
        }
        // Everything else is copied.
        let a = values(&k3.enc_stages[0][0].conv2.weight);
        let b = values(&k5.enc_stages[0][0].conv2.weight);
        assert_eq!(a, b);
        // Transposed depthwise kernels too.
        let u3 = values(&k3.up_blocks[0].conv1.weight);
        let u5 = values(&k5.up_blocks[0].conv1.weight);
        assert_eq!(u5[62], u3[13]);
    }
}
