//! The npy and TIFF readers never panic on arbitrary or damaged bytes: every input gives a
//! value or an error. Cases per property: 2,000 by default; set `EM_FUZZ_CASES` for a longer
//! run (the closing notes of the issue that added this give the counts run).

mod common;

use std::path::Path;

use common::fixtures;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("EM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Writes `bytes` to a file and runs `read` on it; a returned array must be self-consistent.
fn check(
    bytes: &[u8],
    ext: &str,
    read: fn(&Path) -> em_io::Result<em_core::AnyArray>,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("input.{ext}"));
    std::fs::write(&path, bytes).unwrap();
    match read(&path) {
        Ok(a) => prop_assert_eq!(a.len(), a.shape().iter().product::<usize>()),
        Err(e) => prop_assert!(
            e.to_string().contains("input."),
            "error without file name: {}",
            e
        ),
    }
    Ok(())
}

/// A mutation of a valid file: overwrite some bytes, then maybe truncate or insert.
fn mutated(seed_files: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seed_files
        .iter()
        .map(|f| std::fs::read(fixtures().join(f)).unwrap())
        .collect();
    (
        0..seeds.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        prop::option::of(any::<prop::sample::Index>()),
        prop::option::of((
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..16),
        )),
    )
        .prop_map(move |(which, edits, cut, insert)| {
            let mut b = seeds[which].clone();
            for (at, v) in edits {
                let i = at.index(b.len());
                b[i] = v;
            }
            if let Some((at, bytes)) = insert {
                let i = at.index(b.len());
                b.splice(i..i, bytes);
            }
            if let Some(at) = cut {
                b.truncate(at.index(b.len() + 1));
            }
            b
        })
}

const NPY_SEEDS: &[&str] = &[
    "npy_uint8.npy",
    "npy_float32.npy",
    "npy_float16.npy",
    "npy_float32_fortran.npy",
    "npy_uint16_bigendian.npy",
    "npy_bool.npy",
];
const TIFF_SEEDS: &[&str] = &[
    "tiff_uint8.tif",
    "tiff_uint16_imagej.tif",
    "tiff_uint16_deflate.tif",
    "tiff_uint8_lzw.tif",
    "tiff_float32_bigtiff.tif",
    "tiff_int16.tif",
];

fn random_with_magic(magics: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(magics),
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(m, rest)| {
            let mut b = m.to_vec();
            b.extend(rest);
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn npy_random_bytes(bytes in random_with_magic(&[b"", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"\x93NUMPY\x03\x00"])) {
        check(&bytes, "npy", em_io::read_npy)?;
    }

    #[test]
    fn npy_mutated_files(bytes in mutated(NPY_SEEDS)) {
        check(&bytes, "npy", em_io::read_npy)?;
    }

    #[test]
    fn tiff_random_bytes(bytes in random_with_magic(&[b"", b"II*\0", b"MM\0*", b"II+\0\x08\0\0\0"])) {
        check(&bytes, "tif", em_io::read_tiff)?;
    }

    #[test]
    fn tiff_mutated_files(bytes in mutated(TIFF_SEEDS)) {
        check(&bytes, "tif", em_io::read_tiff)?;
    }
}
