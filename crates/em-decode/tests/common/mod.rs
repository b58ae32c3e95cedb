//! Helpers shared by em-decode's integration tests (each test file uses a subset, hence the
//! `dead_code` allowance).
#![allow(dead_code)]

use std::path::PathBuf;

use em_core::{AnyArray, ChunkedVolume, ChunkedVolumeExt, Element, InMemoryVolume};
use ndarray::{Array, Array4, Dimension};
use proptest::prelude::*;

/// A file or directory of the committed fixture directory `tests/fixtures`.
pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A JSON file of the fixture directory.
pub(crate) fn fixture_json(name: &str) -> serde_json::Value {
    let path = fixture(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// A fixture volume (any format em-io reads) as `T` elements with `D` axes.
pub(crate) fn read_fixture<T: Element, D: Dimension>(name: &str) -> Array<T, D> {
    em_io::read(fixture(name))
        .unwrap()
        .into_typed::<T>()
        .unwrap()
        .into_dimensionality()
        .unwrap()
}

/// A whole volume as `T` elements with `D` axes.
pub(crate) fn read_volume<T: Element, D: Dimension>(
    volume: &(impl ChunkedVolume + ?Sized),
) -> Array<T, D> {
    volume
        .read_all()
        .unwrap()
        .into_typed::<T>()
        .unwrap()
        .into_dimensionality()
        .unwrap()
}

/// Affinities held in memory, as the input volume of a blockwise decode.
pub(crate) fn volume(aff: &Array4<f32>) -> InMemoryVolume {
    InMemoryVolume::new(AnyArray::from(aff.clone().into_dyn()), "affinities")
}

/// Six affinity channels of up to 6×6×7 voxels: off (0.1), on (0.9) and NaN, 4 : 3 : 1.
pub(crate) fn random_volumes() -> impl Strategy<Value = Array4<f32>> {
    (1usize..7, 1usize..7, 1usize..8).prop_flat_map(|(z, y, x)| {
        prop::collection::vec(
            prop_oneof![4 => Just(0.1f32), 3 => Just(0.9f32), 1 => Just(f32::NAN)],
            6 * z * y * x,
        )
        .prop_map(move |v| Array4::from_shape_vec((6, z, y, x), v).unwrap())
    })
}
