//! Files written by numpy, tifffile, zarr-python (v2 and v3) and h5py read back exactly.

mod common;

use common::{fixtures, pattern};
use em_core::{ChunkedVolume, DType, Roi};

#[derive(serde::Deserialize)]
struct Entry {
    file: String,
    dtype: String,
    shape: Vec<usize>,
    zarr_format: Option<u8>,
}

fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn wanted(entry: &Entry) -> bool {
    cfg!(feature = "hdf5") || !entry.file.contains(".h5")
}

#[test]
fn every_fixture_reads_with_the_right_dtype_shape_and_values() {
    let entries = manifest();
    assert!(
        entries.len() >= 40,
        "manifest lists {} files",
        entries.len()
    );
    let mut checked = 0;
    for e in entries.iter().filter(|e| wanted(e)) {
        let path = fixtures().join(&e.file);
        let dtype: DType = e.dtype.parse().unwrap();
        let array = em_io::read(&path).unwrap_or_else(|err| panic!("{}: {err}", e.file));
        assert_eq!(array.dtype(), dtype, "{}", e.file);
        assert_eq!(array.shape(), &e.shape[..], "{}", e.file);
        assert_eq!(array, pattern(&e.shape, dtype), "{}: values differ", e.file);
        checked += 1;
    }
    assert!(checked >= 35);
}

#[test]
fn lazy_volumes_read_any_region_like_a_slice_of_the_whole() {
    for e in manifest().iter().filter(|e| wanted(e)) {
        let path = fixtures().join(&e.file);
        let volume = em_io::open(&path).unwrap();
        let whole = pattern(&e.shape, volume.dtype());
        // A region that straddles chunk borders on every axis.
        let start: Vec<u64> = e.shape.iter().map(|&n| (n as u64) / 3).collect();
        let size: Vec<u64> = e
            .shape
            .iter()
            .zip(&start)
            .map(|(&n, s)| (n as u64 - s).min(3))
            .collect();
        let roi = Roi::new(start, size).unwrap();
        let part = volume.read_roi(&roi).unwrap();
        assert_eq!(part, whole.crop(&roi).unwrap(), "{}", e.file);
    }
}

#[test]
fn zarr_versions_and_chunks_are_reported() {
    for e in manifest().iter().filter(|e| e.zarr_format.is_some()) {
        let vp = em_io::VolumePath::parse(fixtures().join(&e.file)).unwrap();
        let v = em_io::ZarrVolume::open(&vp).unwrap();
        assert_eq!(Some(v.zarr_version()), e.zarr_format, "{}", e.file);
        if e.file.ends_with("sharded") {
            assert_eq!(v.chunk_shape(), &[4, 4, 8]);
        } else {
            assert_eq!(v.chunk_shape(), &[2, 4, 4], "{}", e.file);
        }
        assert!(v
            .describe()
            .contains(&format!("zarr v{}", e.zarr_format.unwrap())));
    }
}

#[cfg(feature = "hdf5")]
#[test]
fn hdf5_chunks_are_reported() {
    let v = em_io::open(fixtures().join("pytc.h5/volumes/labels/neuron_ids")).unwrap();
    assert_eq!(v.chunk_shape(), &[2, 4, 4]);
    let contiguous = em_io::open(fixtures().join("pytc.h5/main")).unwrap();
    assert_eq!(contiguous.chunk_shape(), &[5, 6, 7]);
}
