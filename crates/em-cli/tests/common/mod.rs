//! Helpers shared by the `em` test files (each test binary uses a different subset, hence
//! the `dead_code` allowance).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A 3-channel affinity model config that trains 2 steps in seconds.
pub(crate) const TINY_AFFINITIES: &str = include_str!("../fixtures/tiny_affinities.toml");

/// Runs this build's `em`.
pub(crate) fn em(args: &[&str]) -> Output {
    em_with_path(args, None)
}

/// Runs `em` with `PATH` replaced (to hide Slurm's commands).
pub(crate) fn em_with_path(args: &[&str], path: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_em"));
    c.args(args);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().expect("the em binary runs")
}

/// The last stdout line of a successful run as JSON (`null` if it is not JSON).
pub(crate) fn ok(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or(serde_json::Value::Null)
}

/// A file of em-decode's reference fixtures.
pub(crate) fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../em-decode/tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A one-channel foreground config on a built-in synthetic volume that trains a step in a
/// fraction of a second; with `validation`, validated every 2 steps.
pub(crate) fn tiny_train_config(dir: &Path, steps: usize, validation: bool) -> PathBuf {
    let cfg = dir.join("tiny.toml");
    let validation = if validation {
        "[validation]\nevery = 2\nsource = { kind = \"synthetic\", synth = \"mito\", shape = [16, 32, 32], seed = 5 }\n"
    } else {
        ""
    };
    std::fs::write(
        &cfg,
        format!(
            r#"
steps = {steps}
batch_size = 1
workers = 1
log_every = 1
[model]
arch = "mednext_custom"
in_channels = 1
out_channels = 1
width = 4
ratios = [1, 1, 1, 1, 1, 1, 1, 1, 1]
blocks = [1, 1, 1, 1, 1, 1, 1, 1, 1]
[data]
patch = {{ patch = [16, 16, 16], epoch_len = 8 }}
[[data.sources]]
source = {{ kind = "synthetic", synth = "mito", shape = [16, 48, 48] }}
[targets]
kind = "foreground"
{validation}[checkpoint]
every = 0
"#
        ),
    )
    .unwrap();
    cfg
}

/// The steps logged in a run directory's `metrics.jsonl`, in order.
pub(crate) fn steps_logged(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .filter_map(|v| v["step"].as_u64())
        .collect()
}
