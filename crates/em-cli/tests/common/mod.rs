//! Helpers shared by the `em slurm` test files (each test binary uses a different subset,
//! hence the `dead_code` allowance).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// A 3-channel affinity model config that trains 2 steps in seconds.
pub const TINY_AFFINITIES: &str = include_str!("../fixtures/tiny_affinities.toml");

/// Runs this build's `em`.
pub fn em(args: &[&str]) -> Output {
    em_with_path(args, None)
}

/// Runs `em` with `PATH` replaced (to hide Slurm's commands).
pub fn em_with_path(args: &[&str], path: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_em"));
    c.args(args);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().expect("the em binary runs")
}

/// The last stdout line of a successful run as JSON (`null` if it is not JSON).
pub fn ok(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or(serde_json::Value::Null)
}

/// A file of em-decode's reference fixtures.
pub fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../em-decode/tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}
