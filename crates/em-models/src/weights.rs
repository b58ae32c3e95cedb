//! Loading PyTorch MedNeXt checkpoints (`.safetensors`, `.pt`/`.pth`) in MONAI or original
//! (MIC-DKFZ) key naming, detected from the keys.

use std::path::Path;

use burn::tensor::backend::Backend;
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
    /// Model parameters the file did not provide (they keep their values).
    pub missing: Vec<String>,
    /// File tensors the model has no place for.
    pub unused: Vec<String>,
    /// Shape or type mismatches.
    pub errors: Vec<String>,
}

/// Tensor names in a checkpoint.
///
/// # Errors
/// I/O errors and unreadable files.
pub fn checkpoint_keys(path: &Path) -> Result<Vec<String>> {
    let name = path.display().to_string();
    if is_safetensors(path) {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: name.clone(),
            source,
        })?;
        let bad = |reason: &str| ModelError::Checkpoint {
            path: name.clone(),
            reason: reason.to_string(),
        };
        let len = bytes
            .get(..8)
            .ok_or_else(|| bad("shorter than a safetensors header"))?;
        let len = u64::from_le_bytes(len.try_into().map_err(|_| bad("bad header"))?) as usize;
        let header = bytes
            .get(8..8 + len)
            .ok_or_else(|| bad("header runs past the end of the file"))?;
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| bad(&format!("header is not JSON: {e}")))?;
        Ok(map
            .keys()
            .filter(|k| *k != "__metadata__")
            .cloned()
            .collect())
    } else {
        let reader =
            burn_store::pytorch::PytorchReader::new(path).map_err(|e| ModelError::Checkpoint {
                path: name,
                reason: e.to_string(),
            })?;
        Ok(reader.keys())
    }
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
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
    let result = if is_safetensors(path) {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .remap(remap)
            .allow_partial(true)
            .validate(true);
        model
            .load_from(&mut store)
            .map_err(|e| mismatch(e.to_string()))?
    } else {
        let mut store = PytorchStore::from_file(path)
            .remap(remap)
            .allow_partial(true)
            .validate(true);
        model
            .load_from(&mut store)
            .map_err(|e| mismatch(e.to_string()))?
    };
    let report = LoadReport {
        naming,
        applied: result.applied.len(),
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
