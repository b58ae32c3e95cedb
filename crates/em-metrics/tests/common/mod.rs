//! Helpers shared by em-metrics' integration tests (each test file uses a subset, hence the
//! `dead_code` allowance).
#![allow(dead_code)]

use std::path::PathBuf;

/// The committed fixture directory (written by tools/make_metrics_fixtures.py).
pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A JSON file of the fixture directory (`name` relative to it).
pub(crate) fn fixture_json(name: &str) -> serde_json::Value {
    let path = fixtures().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}
