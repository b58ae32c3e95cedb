//! Damaged files and wrong requests give clear errors that name the file and the problem.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{fixtures, pattern};
use em_core::{AnyArray, ChunkedVolumeExt, DType, Roi};

fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(Path::new(name).file_name().unwrap());
    let from = fixtures().join(name);
    if from.is_dir() {
        copy_dir(&from, &to);
    } else {
        fs::copy(&from, &to).unwrap();
    }
    to
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn read_err(path: &Path) -> String {
    let err = em_io::read(path)
        .expect_err("reading must fail")
        .to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(err.contains(&*name), "error does not name the file: {err}");
    err
}

#[test]
fn truncated_npy() {
    let dir = tempfile::tempdir().unwrap();
    let p = copy_fixture("npy_float32.npy", dir.path());
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let err = read_err(&p);
    assert!(
        err.contains("truncated") && err.contains("[5, 6, 7]"),
        "{err}"
    );
    // Cut inside the header.
    fs::write(&p, &bytes[..20]).unwrap();
    assert!(read_err(&p).contains("bad header"));
    // Extra bytes after the data.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 3]);
    fs::write(&p, &longer).unwrap();
    assert!(read_err(&p).contains("3 unexpected bytes"));
}

#[test]
fn npy_headers_that_lie_or_use_unknown_types() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lie.npy");
    let header = |dict: &str| {
        let mut d = dict.to_string();
        let unpadded = 10 + d.len() + 1;
        d.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
        d.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(d.len() as u16).to_le_bytes());
        out.extend_from_slice(d.as_bytes());
        out
    };
    // A shape of 10^15 voxels in a tiny file: an error, not an allocation.
    let mut f =
        header("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }");
    f.extend_from_slice(&[0; 16]);
    fs::write(&p, &f).unwrap();
    assert!(read_err(&p).contains("truncated"));
    // Overflowing shapes.
    fs::write(&p, header("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }")).unwrap();
    assert!(read_err(&p).contains("too large"));
    // Complex numbers and structured types are not volumes.
    fs::write(
        &p,
        header("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }"),
    )
    .unwrap();
    let err = read_err(&p);
    assert!(
        err.contains("<c8") && err.contains("not supported"),
        "{err}"
    );
    // Not an npy file at all.
    fs::write(&p, b"hello world, this is text").unwrap();
    assert!(read_err(&p).contains("not a valid npy file"));
}

#[test]
fn truncated_and_garbage_tiff() {
    let dir = tempfile::tempdir().unwrap();
    let p = copy_fixture("tiff_uint16.tif", dir.path());
    let bytes = fs::read(&p).unwrap();
    // tifffile puts page data first (bytes 256..676) and the page directories after it.
    let mut truncated = 0;
    for cut in [8, 100, 300, bytes.len() / 2, 1000] {
        fs::write(&p, &bytes[..cut]).unwrap();
        let err = read_err(&p);
        assert!(err.contains("not a valid TIFF file"), "cut at {cut}: {err}");
        // The decoder's own wording ("format error: … TIFF …") is not repeated after ours.
        assert_eq!(err.matches("TIFF").count(), 1, "cut at {cut}: {err}");
        truncated += usize::from(err.contains("truncated"));
    }
    assert!(truncated > 0, "no cut was reported as a truncated file");
    fs::write(&p, b"II*\0garbage that is not an IFD").unwrap();
    let err = read_err(&p);
    assert!(
        err.contains("TIFF") && !err.contains("format error"),
        "{err}"
    );
    fs::write(&p, b"").unwrap();
    assert!(read_err(&p).contains("TIFF"));
}

#[test]
fn colour_tiff_is_refused() {
    let err = read_err(&fixtures().join("bad_rgb.tif"));
    assert!(err.contains("RGB") && err.contains("grayscale"), "{err}");
}

#[test]
fn missing_files_and_unknown_formats() {
    let err = em_io::read("/nonexistent/dir/volume.npy")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/dir/volume.npy") && err.contains("No such file"),
        "{err}"
    );
    let err = em_io::open("/nonexistent/x.zarr/raw")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("x.zarr") && err.contains("no such zarr directory"),
        "{err}"
    );
    let err = em_io::read("volume.mrc").unwrap_err().to_string();
    assert!(err.contains("volume.mrc") && err.contains(".zarr"), "{err}");
}

#[test]
fn missing_zarr_key_lists_what_exists() {
    let err = em_io::open(fixtures().join("v3.zarr/raw"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("\"raw\" not found"), "{err}");
    for available in ["raw_zstd", "labels_gzip", "volumes/labels", "sharded"] {
        assert!(err.contains(available), "{available} missing from: {err}");
    }
    // A group is not an array.
    let err = em_io::open(fixtures().join("v3.zarr/volumes"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("not found") && err.contains("volumes/labels"),
        "{err}"
    );
    let err = em_io::open(fixtures().join("v2.zarr"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("raw_zstd"), "{err}");
}

#[test]
fn corrupt_zarr_metadata_and_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = copy_fixture("v3.zarr", dir.path());
    fs::write(
        store.join("raw_zstd/zarr.json"),
        b"{\"zarr_format\": 3, \"node_type\": \"array\", ",
    )
    .unwrap();
    let err = em_io::open(store.join("raw_zstd"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("raw_zstd") && err.contains("cannot open array"),
        "{err}"
    );
    // A chunk whose compressed bytes are garbage fails on read, naming the region.
    let chunk = store.join("labels_gzip/c/0/0/0");
    assert!(chunk.is_file());
    fs::write(&chunk, b"not gzip at all").unwrap();
    let v = em_io::open(store.join("labels_gzip")).unwrap();
    let err = v.read_roi(&v.roi()).unwrap_err().to_string();
    assert!(
        err.contains("labels_gzip") && err.contains("reading [0..5, 0..6, 0..7]"),
        "{err}"
    );
    // A v2 array whose chunk is truncated.
    let v2 = copy_fixture("v2.zarr", dir.path());
    let chunk = v2.join("raw_zstd/0.0.0");
    let bytes = fs::read(&chunk).unwrap();
    fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
    let v = em_io::open(v2.join("raw_zstd")).unwrap();
    assert!(v.read_roi(&v.roi()).is_err());
}

#[test]
fn wrong_regions_dtypes_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.zarr");
    em_io::write(&path, &pattern(&[4, 4, 4], DType::U32)).unwrap();
    let v = em_io::open(&path).unwrap();
    let outside = Roi::new([2, 2, 2], [4, 1, 1]).unwrap();
    let err = v.read_roi(&outside).unwrap_err().to_string();
    assert!(
        err.contains("v.zarr: region [2..6, 2..3, 2..3]") && err.contains("outside"),
        "{err}"
    );
    let err = v
        .read_roi(&Roi::from_shape([2, 2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("v.zarr") && err.contains("axes"), "{err}");
    let err = v
        .read_roi_as::<u8>(&Roi::from_shape([1, 1, 1]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("v.zarr: expected uint8 data, found uint32"),
        "{err}"
    );
    let floats: AnyArray = ndarray::ArrayD::<f32>::zeros(vec![1, 1, 1]).into();
    let one = Roi::new([0, 0, 0], [1, 1, 1]).unwrap();
    let err = v.write_roi(&one, &floats).unwrap_err().to_string();
    assert!(
        err.ends_with("v.zarr: expected uint32 data, found float32"),
        "{err}"
    );
    let wrong_shape: AnyArray = ndarray::ArrayD::<u32>::zeros(vec![2, 1, 1]).into();
    assert!(v
        .write_roi(&one, &wrong_shape)
        .unwrap_err()
        .to_string()
        .contains("expected shape [1, 1, 1]"));
    // Typed reads check the dtype.
    let err = em_io::read(&path)
        .unwrap()
        .into_typed::<u8>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("uint8") && err.contains("uint32"));
}

#[cfg(feature = "hdf5")]
#[test]
fn hdf5_missing_dataset_and_not_hdf5() {
    let err = em_io::open(fixtures().join("pytc.h5/volumes/raw"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("pytc.h5") && err.contains("\"volumes/raw\" not found"),
        "{err}"
    );
    assert!(
        err.contains("volumes/labels/neuron_ids") && err.contains("main"),
        "{err}"
    );
    let err = em_io::open(fixtures().join("pytc.h5"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("FILE.h5/DATASET"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.h5");
    fs::write(&fake, b"definitely not hdf5").unwrap();
    let err = em_io::open(fake.join("main")).err().unwrap().to_string();
    assert!(
        err.contains("fake.h5") && err.contains("cannot open"),
        "{err}"
    );
    let err = em_io::open(dir.path().join("absent.h5/main"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("absent.h5") && err.contains("No such file"),
        "{err}"
    );
}

#[cfg(not(feature = "hdf5"))]
#[test]
fn hdf5_without_the_feature_says_how_to_get_it() {
    let err = em_io::open(fixtures().join("pytc.h5/main"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--features hdf5"), "{err}");
}
