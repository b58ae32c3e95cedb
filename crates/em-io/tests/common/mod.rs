//! Helpers shared by em-io's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use em_core::{f16, AnyArray, DType};
use ndarray::ArrayD;

/// The committed fixture directory (written by tools/make_io_fixtures.py).
pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The value pattern of tools/make_io_fixtures.py, recomputed here.
pub(crate) fn pattern(shape: &[usize], dtype: DType) -> AnyArray {
    let weights: Vec<u64> = if shape.len() <= 3 {
        [131, 17, 3, 1][4 - shape.len()..].to_vec()
    } else {
        vec![1009, 131, 17, 3]
    };
    let base = ArrayD::from_shape_fn(shape.to_vec(), |ix| {
        (0..shape.len())
            .map(|a| ix[a] as u64 * weights[a])
            .sum::<u64>()
    });
    let float = |b: &u64| ((b % 97) as f64) / 7.0 - 3.0;
    let int = |b: &u64| (b % 200) as i64 - 100;
    match dtype {
        DType::Bool => base.mapv(|b| b % 3 == 0).into(),
        DType::U8 => base.mapv(|b| (b % 251) as u8).into(),
        DType::U16 => base.mapv(|b| (b % 251) as u16).into(),
        DType::U32 => base.mapv(|b| (b % 251) as u32).into(),
        DType::U64 => base.mapv(|b| b % 251).into(),
        DType::I8 => base.map(|b| int(b) as i8).into(),
        DType::I16 => base.map(|b| int(b) as i16).into(),
        DType::I32 => base.map(|b| int(b) as i32).into(),
        DType::I64 => base.map(int).into(),
        DType::F16 => base.map(|b| f16::from_f64(float(b))).into(),
        DType::F32 => base.map(|b| float(b) as f32).into(),
        DType::F64 => base.map(float).into(),
    }
}

/// Names in a directory, sorted: to check that nothing half-written is left behind.
pub(crate) fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether `python3` imports every module of `modules` (the reference checks need them).
/// Without them the calling test skips with a message, unless `EM_REQUIRE_PYTHON` is set
/// (CI), where a missing install fails it.
pub(crate) fn python_has(modules: &[&str]) -> bool {
    let have = std::process::Command::new("python3")
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("EM_REQUIRE_PYTHON").is_none(),
            "EM_REQUIRE_PYTHON is set but {} are not importable",
            modules.join("/")
        );
        eprintln!("skipping: python3 with {} not found", modules.join(", "));
    }
    have
}

/// Runs the reference script `tools/NAME` with `args`, fails the test with its output
/// unless it succeeds, and returns what it printed.
pub(crate) fn run_python_check<S: AsRef<std::ffi::OsStr>>(name: &str, args: &[S]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools")
        .join(name);
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
