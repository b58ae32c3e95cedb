//! Sweeps: one job per combination of config values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::job::{check_name, parse_value, JobConfig};
use crate::{Result, SlurmError};

/// How parameter lists combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepMode {
    /// Every combination (the cartesian product).
    #[default]
    Product,
    /// The i-th values of every list together (lists of equal length).
    Zip,
}

/// A sweep file:
/// ```toml
/// job = "job.toml"          # the base job, relative to this file
/// mode = "product"          # or "zip"
/// [parameters]              # keys of the *training* config, passed as --set KEY=VALUE
/// "optimizer.lr" = [1e-3, 3e-3]
/// batch_size = [2, 4]
/// ```
/// Each point runs the base command with `--set KEY=VALUE` appended for its values; its
/// name is the base name followed by the values, e.g. `lucchi-lr=0.001-batch_size=2`, and
/// `{name}` in the command (e.g. `--out runs/{name}`) gives each its own directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// The base job config file (relative to the sweep file).
    pub job: PathBuf,
    /// How the lists combine.
    #[serde(default)]
    pub mode: SweepMode,
    /// The varying keys and their values.
    pub parameters: BTreeMap<String, Vec<toml::Value>>,
}

/// One job of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepPoint {
    /// The job, with its name and command set for this point.
    pub job: JobConfig,
    /// The values of this point, as passed to `--set`.
    pub values: BTreeMap<String, String>,
}

impl SweepConfig {
    /// Reads a sweep file and its base job.
    ///
    /// # Errors
    /// Unreadable or invalid files.
    pub fn load(path: &Path) -> Result<(Self, JobConfig)> {
        let text = std::fs::read_to_string(path).map_err(SlurmError::io(path))?;
        let sweep: Self = toml::from_str(&text).map_err(|e| SlurmError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).join(&sweep.job);
        let job = JobConfig::load(&base)?;
        Ok((sweep, job))
    }

    /// The jobs of this sweep over `base`, in a stable order (keys sorted, the last key
    /// varying fastest).
    ///
    /// # Errors
    /// No parameters, an empty list, lists of unequal length in `zip` mode, more than
    /// 10 000 points, or a point whose job is invalid.
    pub fn expand(&self, base: &JobConfig) -> Result<Vec<SweepPoint>> {
        if self.parameters.is_empty() {
            return Err(SlurmError::invalid(
                "parameters",
                "empty; give at least one key with a list of values",
            ));
        }
        let mut lists: Vec<(&String, Vec<String>)> = Vec::new();
        for (key, values) in &self.parameters {
            if key.is_empty() || key.contains(['=', ' ']) {
                return Err(SlurmError::invalid(
                    format!("parameters.{key}"),
                    "not a config key such as \"optimizer.lr\"",
                ));
            }
            if values.is_empty() {
                return Err(SlurmError::invalid(
                    format!("parameters.{key}"),
                    "an empty list; give at least one value",
                ));
            }
            lists.push((key, values.iter().map(value_text).collect()));
        }
        let combos: Vec<Vec<usize>> = match self.mode {
            SweepMode::Zip => {
                let n = lists[0].1.len();
                if let Some((key, l)) = lists.iter().find(|(_, l)| l.len() != n) {
                    return Err(SlurmError::invalid(
                        format!("parameters.{key}"),
                        format!(
                            "{} values where {} has {n}; zip needs lists of equal length",
                            l.len(),
                            lists[0].0
                        ),
                    ));
                }
                (0..n).map(|i| vec![i; lists.len()]).collect()
            }
            SweepMode::Product => {
                let total = lists
                    .iter()
                    .try_fold(1usize, |a, (_, l)| a.checked_mul(l.len()))
                    .unwrap_or(usize::MAX);
                if total > 10_000 {
                    return Err(SlurmError::invalid(
                        "parameters",
                        format!("{total} combinations; at most 10000 jobs per sweep"),
                    ));
                }
                let mut combos = vec![Vec::new()];
                for (_, l) in &lists {
                    combos = combos
                        .into_iter()
                        .flat_map(|c| {
                            (0..l.len()).map(move |i| {
                                let mut c = c.clone();
                                c.push(i);
                                c
                            })
                        })
                        .collect();
                }
                combos
            }
        };
        let mut names = std::collections::HashSet::new();
        combos
            .into_iter()
            .map(|combo| {
                let mut job = base.clone();
                let mut values = BTreeMap::new();
                let mut name = base.name.clone();
                for ((key, list), &i) in lists.iter().zip(&combo) {
                    let v = &list[i];
                    job.command.push("--set".into());
                    job.command.push(format!("{key}={v}"));
                    let short = key.rsplit('.').next().unwrap_or(key);
                    name.push('-');
                    name.push_str(&sanitize(&format!("{short}={v}")));
                    values.insert((*key).clone(), v.clone());
                }
                if !names.insert(name.clone()) {
                    return Err(SlurmError::invalid(
                        "parameters",
                        format!("two points are both named {name:?}; make the values distinct"),
                    ));
                }
                check_name(&name)?;
                job.name = name;
                job.validate()?;
                Ok(SweepPoint { job, values })
            })
            .collect()
    }
}

/// A value as `--set` takes it: TOML, strings as bare words when they are plain.
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) if matches!(parse_value(s), toml::Value::String(_)) => s.clone(),
        other => other.to_string(),
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-=+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
