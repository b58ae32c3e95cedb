//! What em-io writes reads back identically, writes are atomic, and (where the Python
//! libraries are installed) numpy/tifffile/zarr/h5py read our files.

mod common;

use common::{listing, pattern, python_has, run_python_check};
use em_core::{AnyArray, ChunkedVolume, ChunkedVolumeExt, DType, Roi};
use em_io::{Compression, VolumePath, ZarrOptions, ZarrVersion, ZarrWriter};

const SHAPE: [usize; 3] = [5, 6, 7];

#[test]
fn npy_roundtrips_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in DType::ALL {
        let path = dir.path().join(format!("{dtype}.npy"));
        let data = pattern(&SHAPE, dtype);
        em_io::write(&path, &data).unwrap();
        assert_eq!(em_io::read(&path).unwrap(), data, "{dtype}");
    }
}

#[test]
fn tiff_roundtrips_every_writable_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in DType::ALL {
        let path = dir.path().join(format!("{dtype}.tif"));
        let data = pattern(&SHAPE, dtype);
        match dtype {
            DType::F16 => {
                let err = em_io::write(&path, &data).unwrap_err().to_string();
                assert!(
                    err.contains("float16") && err.contains("not supported"),
                    "{err}"
                );
                assert!(!path.exists());
            }
            DType::Bool => {
                em_io::write(&path, &data).unwrap();
                let back = em_io::read(&path).unwrap();
                let expected: AnyArray = data.view_typed::<bool>().unwrap().mapv(u8::from).into();
                assert_eq!(back, expected);
            }
            _ => {
                em_io::write(&path, &data).unwrap();
                assert_eq!(em_io::read(&path).unwrap(), data, "{dtype}");
            }
        }
    }
    // A single 2-D page reads as one section.
    let page = dir.path().join("page.tif");
    let data2 = pattern(&[6, 7], DType::U16);
    em_io::write(&page, &data2).unwrap();
    assert_eq!(em_io::read(&page).unwrap().shape(), &[1, 6, 7]);
    assert_eq!(
        listing(dir.path())
            .iter()
            .filter(|n| n.contains("partial"))
            .count(),
        0
    );
}

#[test]
fn zarr_roundtrips_every_dtype_codec_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let codecs = [
        Compression::None,
        Compression::Zstd(3),
        Compression::Gzip(5),
        Compression::BloscLz4(5),
    ];
    for (version, container) in [(ZarrVersion::V3, "v3.zarr"), (ZarrVersion::V2, "v2.zarr")] {
        for (i, dtype) in DType::ALL.into_iter().enumerate() {
            let vp = VolumePath::parse(dir.path().join(format!("{container}/{dtype}"))).unwrap();
            let data = pattern(&SHAPE, dtype);
            let options = ZarrOptions {
                chunk_shape: Some(vec![2, 4, 3]),
                compression: codecs[(i + version as usize) % codecs.len()],
                version: Some(version),
            };
            let v = em_io::write_zarr(&vp, &data, &options).unwrap();
            assert_eq!(v.chunk_shape(), &[2, 4, 3]);
            let expected_version = if version == ZarrVersion::V2 { 2 } else { 3 };
            assert_eq!(v.zarr_version(), expected_version);
            assert_eq!(v.read_all().unwrap(), data, "{dtype} {version:?}");
        }
        // Every array sits beside the others in one container, with the group metadata.
        let names = listing(&dir.path().join(container));
        assert_eq!(names.len(), DType::ALL.len() + 1, "{names:?}");
        let group_file = if version == ZarrVersion::V2 {
            ".zgroup"
        } else {
            "zarr.json"
        };
        assert!(names.contains(&group_file.to_string()), "{names:?}");
    }
}

#[test]
fn new_arrays_follow_the_version_of_their_container() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| VolumePath::parse(dir.path().join(name)).unwrap();
    let data = pattern(&SHAPE, DType::U32);
    em_io::write(dir.path().join("new3.zarr/raw"), &data).unwrap();
    let v2 = ZarrOptions {
        version: Some(ZarrVersion::V2),
        ..Default::default()
    };
    em_io::write_zarr(&at("new2.zarr/raw"), &data, &v2).unwrap();
    // Without an explicit version, a new array in a v2 group is v2, in a v3 group v3.
    let default = ZarrOptions::default();
    let in_v2 = em_io::write_zarr(&at("new2.zarr/seg"), &data, &default).unwrap();
    assert_eq!(in_v2.zarr_version(), 2);
    let in_v3 = em_io::write_zarr(&at("new3.zarr/seg"), &data, &default).unwrap();
    assert_eq!(in_v3.zarr_version(), 3);
    // Bad levels are refused before anything is written.
    for bad in [
        Compression::Gzip(12),
        Compression::BloscLz4(10),
        Compression::Zstd(99),
    ] {
        let opts = ZarrOptions {
            compression: bad,
            ..Default::default()
        };
        let err = em_io::write_zarr(&at("bad.zarr"), &data, &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("compression") && err.contains("allowed"),
            "{err}"
        );
    }
    assert!(!dir.path().join("bad.zarr").exists());
}

#[test]
fn zarr_region_writes_land_where_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let vp = VolumePath::parse(dir.path().join("seg.zarr")).unwrap();
    let shape = [9u64, 10, 11];
    let opts = ZarrOptions {
        chunk_shape: Some(vec![4, 4, 4]),
        ..Default::default()
    };
    let writer = ZarrWriter::create(&vp, &shape, DType::U64, &opts).unwrap();
    // Until commit the target does not exist: no reader can mistake it for a finished volume.
    assert!(!dir.path().join("seg.zarr").exists());
    let full = pattern(&[9, 10, 11], DType::U64);
    let grid = em_core::BlockGrid::new(&shape, &[3, 5, 7], &[0, 0, 0]).unwrap();
    for block in grid.iter() {
        let part = full.crop(&block.core).unwrap();
        writer.volume().write_roi(&block.core, &part).unwrap();
    }
    let v = writer.commit().unwrap();
    assert_eq!(v.read_all().unwrap(), full);
    let roi = Roi::new([3, 3, 3], [5, 5, 5]).unwrap();
    assert_eq!(v.read_roi(&roi).unwrap(), full.crop(&roi).unwrap());
    // And region writes into an existing array (read-modify-write of partial chunks).
    let opened = em_io::open(dir.path().join("seg.zarr")).unwrap();
    let ones: AnyArray = ndarray::ArrayD::<u64>::from_elem(vec![2, 3, 4], 1).into();
    let small = Roi::new([1, 2, 3], [2, 3, 4]).unwrap();
    opened.write_roi(&small, &ones).unwrap();
    let back = opened.read_all().unwrap().into_typed::<u64>().unwrap();
    let mut expected = full.into_typed::<u64>().unwrap();
    small.slice_mut(&mut expected).unwrap().fill(1);
    assert_eq!(back, expected);
}

#[test]
fn an_uncommitted_zarr_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vp = VolumePath::parse(dir.path().join("out.zarr/seg")).unwrap();
    {
        let w = ZarrWriter::create(&vp, &[4, 4, 4], DType::U32, &ZarrOptions::default()).unwrap();
        let part: AnyArray = ndarray::ArrayD::<u32>::from_elem(vec![2, 2, 2], 7).into();
        w.volume()
            .write_roi(&Roi::new([0, 0, 0], [2, 2, 2]).unwrap(), &part)
            .unwrap();
        // Dropped here, as if the process failed half-way.
    }
    let container = dir.path().join("out.zarr");
    // Only the (empty) group remains: no array, no staging directory.
    assert_eq!(listing(&container), vec!["zarr.json".to_string()]);
    let err = em_io::open(dir.path().join("out.zarr/seg"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"seg\" not found"), "{err}");
}

#[test]
fn rewriting_replaces_an_array_and_keeps_its_siblings() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("c.zarr/a");
    let b = dir.path().join("c.zarr/nested/b");
    em_io::write(&a, &pattern(&SHAPE, DType::U8)).unwrap();
    em_io::write(&b, &pattern(&SHAPE, DType::F32)).unwrap();
    let replacement = pattern(&[2, 3], DType::I16);
    em_io::write(&a, &replacement).unwrap();
    assert_eq!(em_io::read(&a).unwrap(), replacement);
    assert_eq!(em_io::read(&b).unwrap(), pattern(&SHAPE, DType::F32));
    assert!(listing(&dir.path().join("c.zarr"))
        .iter()
        .all(|n| !n.contains("partial")));
    // npy and TIFF overwrite in place too.
    let n = dir.path().join("x.npy");
    em_io::write(&n, &pattern(&SHAPE, DType::U8)).unwrap();
    em_io::write(&n, &replacement).unwrap();
    assert_eq!(em_io::read(&n).unwrap(), replacement);
}

#[test]
fn failed_writes_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let four_d = pattern(&[2, 2, 2, 2], DType::U8);
    let tif = dir.path().join("bad.tif");
    let err = em_io::write(&tif, &four_d).unwrap_err().to_string();
    assert!(err.contains("bad.tif") && err.contains("axes"), "{err}");
    // A failed write over an existing file keeps the old content.
    let keep = dir.path().join("keep.tif");
    let old = pattern(&SHAPE, DType::U8);
    em_io::write(&keep, &old).unwrap();
    assert!(em_io::write(&keep, &pattern(&SHAPE, DType::F16)).is_err());
    assert_eq!(em_io::read(&keep).unwrap(), old);
    let bad_chunks = ZarrOptions {
        chunk_shape: Some(vec![0, 1, 1]),
        ..Default::default()
    };
    let vp = VolumePath::parse(dir.path().join("z.zarr")).unwrap();
    let err = em_io::write_zarr(&vp, &old, &bad_chunks)
        .unwrap_err()
        .to_string();
    assert!(err.contains("chunk shape"), "{err}");
    // Nothing half-written anywhere: just the two good files.
    assert_eq!(listing(dir.path()), vec!["keep.tif".to_string()]);
}

#[cfg(feature = "hdf5")]
#[test]
fn hdf5_roundtrips_and_keeps_other_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vol.h5");
    for dtype in DType::ALL.into_iter().filter(|d| *d != DType::F16) {
        let data = pattern(&SHAPE, dtype);
        em_io::write(file.join(format!("group/{dtype}")), &data).unwrap();
    }
    for dtype in DType::ALL.into_iter().filter(|d| *d != DType::F16) {
        let back = em_io::read(file.join(format!("group/{dtype}"))).unwrap();
        assert_eq!(back, pattern(&SHAPE, dtype), "{dtype}");
    }
    // Region reads and writes through a read-write handle.
    let vp = VolumePath::parse(file.join("group/uint32")).unwrap();
    let v = em_io::Hdf5Volume::open_rw(&vp).unwrap();
    let roi = Roi::new([1, 1, 1], [2, 2, 2]).unwrap();
    let sevens: AnyArray = ndarray::ArrayD::<u32>::from_elem(vec![2, 2, 2], 7).into();
    v.write_roi(&roi, &sevens).unwrap();
    assert_eq!(v.read_roi(&roi).unwrap(), sevens);
    // Read-only handles refuse writes with a message.
    let ro = em_io::open(file.join("group/uint32")).unwrap();
    let err = ro.write_roi(&roi, &sevens).unwrap_err().to_string();
    assert!(err.contains("read-only"), "{err}");
    assert!(listing(dir.path()).iter().all(|n| !n.contains("partial")));
}

/// numpy, tifffile, zarr-python and h5py read what we write. Runs where those libraries are
/// installed (`pip install -r tools/requirements.txt`); CI sets `EM_REQUIRE_PYTHON=1` so that
/// a missing install fails instead of skipping.
#[test]
fn python_reads_our_files() {
    if !python_has(&["numpy", "tifffile", "zarr", "h5py"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut written = vec![];
    for dtype in [
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::I16,
        DType::F32,
        DType::F64,
        DType::Bool,
    ] {
        for name in [format!("{dtype}.npy"), format!("out.zarr/{dtype}")] {
            em_io::write(dir.path().join(&name), &pattern(&SHAPE, dtype)).unwrap();
            written.push(format!("{name}:{dtype}"));
        }
        for (i, compression) in [
            Compression::BloscLz4(5),
            Compression::Zstd(3),
            Compression::Gzip(4),
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("v2_{i}.zarr/{dtype}");
            let opts = ZarrOptions {
                chunk_shape: Some(vec![2, 4, 3]),
                compression,
                version: Some(ZarrVersion::V2),
            };
            em_io::write_zarr(
                &VolumePath::parse(dir.path().join(&name)).unwrap(),
                &pattern(&SHAPE, dtype),
                &opts,
            )
            .unwrap();
            written.push(format!("{name}:{dtype}"));
        }
        if dtype != DType::Bool {
            let name = format!("{dtype}.tif");
            em_io::write(dir.path().join(&name), &pattern(&SHAPE, dtype)).unwrap();
            written.push(format!("{name}:{dtype}"));
        }
        if cfg!(feature = "hdf5") {
            let name = format!("out.h5/{dtype}");
            em_io::write(dir.path().join(&name), &pattern(&SHAPE, dtype)).unwrap();
            written.push(format!("{name}:{dtype}"));
        }
    }
    let mut args = vec![dir.path().as_os_str().to_owned()];
    args.extend(written.iter().map(std::ffi::OsString::from));
    let report = run_python_check("check_python_reads.py", &args);
    assert!(
        report.contains(&format!("{} ok", written.len())),
        "{report}"
    );
}
