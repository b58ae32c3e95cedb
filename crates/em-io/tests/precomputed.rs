//! Neuroglancer precomputed: volumes tensorstore wrote read value for value, our volumes
//! read by tensorstore and the compressed_segmentation package, round trips of every
//! layout, and malformed input refused with an error.

mod common;

use std::path::{Path, PathBuf};

use common::{listing, python_has, run_python_check};
use em_core::{AnyArray, ChunkedVolume, ChunkedVolumeExt, DType, InMemoryVolume, Roi};
use em_io::precomputed::{
    copy_to_precomputed, cseg, write_precomputed, PrecomputedEncoding, PrecomputedOptions,
    PrecomputedVolume, PrecomputedWriter, ShardHash, Sharding, ShardingSpec,
};
use em_io::IoError;
use ndarray::{ArrayD, Dimension, IxDyn};
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    common::fixtures().join("precomputed")
}

#[derive(serde::Deserialize)]
struct Entry {
    name: String,
    expected: String,
    dtype: String,
    shape: Vec<usize>,
    encoding: String,
    sharded: bool,
    resolution_zyx: [f64; 3],
    voxel_offset_zyx: [i64; 3],
}

fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A label volume with a few large ids and an empty corner, deterministic in `seed`.
fn labels<T: From<u32> + Copy>(shape: &[usize], seed: u32) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        let n = ix.ndim();
        let (z, y, x) = (ix[n - 3], ix[n - 2], ix[n - 1]);
        if x < 2 && y < 2 {
            return T::from(0);
        }
        let c = if n == 4 { ix[0] as u32 } else { 0 };
        T::from(
            (((z / 2) * 31 + (y / 3) * 7 + x / 4) as u32 + c * 1000)
                .wrapping_mul(2_654_435_761 ^ seed)
                % 50
                + 1,
        )
    })
}

fn volume(shape: &[usize], dtype: DType, seed: u32) -> AnyArray {
    match dtype {
        DType::U32 => labels::<u32>(shape, seed).into(),
        DType::U64 => labels::<u64>(shape, seed).mapv(|v| v << 33 | v).into(),
        DType::U8 => labels::<u32>(shape, seed).mapv(|v| (v * 5) as u8).into(),
        DType::U16 => labels::<u32>(shape, seed).mapv(|v| (v * 999) as u16).into(),
        DType::I8 => labels::<u32>(shape, seed).mapv(|v| v as i8 - 20).into(),
        DType::I16 => labels::<u32>(shape, seed).mapv(|v| v as i16 * -300).into(),
        DType::I32 => labels::<u32>(shape, seed)
            .mapv(|v| v as i32 * -70_000)
            .into(),
        DType::F32 => labels::<u32>(shape, seed)
            .mapv(|v| v as f32 / 7.0 - 2.0)
            .into(),
        other => panic!("{other}"),
    }
}

/// Regions that straddle chunk borders on every axis, and one voxel.
fn probe_regions(shape: &[u64]) -> Vec<Roi> {
    let n = shape.len();
    let mut out = vec![];
    for frac in [(1, 3), (1, 2), (0, 1)] {
        let start: Vec<u64> = shape
            .iter()
            .map(|&s| s * frac.0 / frac.1.max(1) / 2)
            .collect();
        let size: Vec<u64> = shape
            .iter()
            .zip(&start)
            .map(|(&s, &a)| (s - a).clamp(1, 7))
            .collect();
        out.push(Roi::new(start, size).unwrap());
    }
    out.push(Roi::new(shape.iter().map(|&s| s - 1).collect::<Vec<_>>(), vec![1; n]).unwrap());
    out
}

#[test]
fn tensorstore_fixtures_read_value_for_value() {
    let entries = manifest();
    assert!(entries.len() >= 10, "{} fixtures", entries.len());
    let mut seen = (false, false, false, false);
    for e in &entries {
        let path = fixtures().join(&e.name);
        let want = em_io::read_npy(&fixtures().join(&e.expected)).unwrap();
        let v =
            PrecomputedVolume::open_path(&path).unwrap_or_else(|err| panic!("{}: {err}", e.name));
        assert_eq!(v.dtype().name(), e.dtype, "{}", e.name);
        assert_eq!(
            v.shape(),
            e.shape.iter().map(|&n| n as u64).collect::<Vec<_>>(),
            "{}",
            e.name
        );
        assert_eq!(v.resolution_nm(), e.resolution_zyx, "{}", e.name);
        assert_eq!(v.voxel_offset(), e.voxel_offset_zyx, "{}", e.name);
        assert_eq!(v.read_all().unwrap(), want, "{}: values differ", e.name);
        for roi in probe_regions(v.shape()) {
            assert_eq!(
                v.read_roi(&roi).unwrap(),
                want.crop(&roi).unwrap(),
                "{} {roi}",
                e.name
            );
        }
        // The generic entry points agree.
        assert_eq!(em_io::read(&path).unwrap(), want, "{}", e.name);
        let (shape, dtype) = em_io::peek(&path).unwrap().unwrap();
        assert_eq!((shape, dtype), (v.shape().to_vec(), v.dtype()));
        seen.0 |= e.encoding == "compressed_segmentation";
        seen.1 |= e.sharded && e.name.contains("murmur");
        seen.2 |= e.sharded && e.name.contains("identity");
        seen.3 |= e.shape.len() == 4;
    }
    assert_eq!(
        seen,
        (true, true, true, true),
        "every kind of fixture is present"
    );
}

#[test]
fn scales_are_chosen_by_key() {
    let path = fixtures().join("raw_uint8.precomputed");
    let v = PrecomputedVolume::open_path(path.join("4_5_40")).unwrap();
    assert_eq!(v.scale().key, "4_5_40");
    let e = PrecomputedVolume::open_path(path.join("8_8_8")).unwrap_err();
    assert!(matches!(&e, IoError::KeyNotFound { .. }), "{e}");
    assert!(e.to_string().contains("available: 4_5_40"), "{e}");
}

fn options(
    encoding: PrecomputedEncoding,
    sharding: Sharding,
    gzip: bool,
    chunk: [u64; 3],
) -> PrecomputedOptions {
    PrecomputedOptions {
        encoding,
        chunk_shape: Some(chunk),
        block_shape: [3, 4, 5],
        gzip,
        sharding,
        voxel_size: [40.0, 4.0, 4.5],
        ..Default::default()
    }
}

fn murmur_spec(data_gzip: bool) -> Sharding {
    Sharding::Spec(ShardingSpec {
        preshift_bits: 1,
        hash: ShardHash::Murmurhash3X86_128,
        minishard_bits: 2,
        shard_bits: 2,
        minishard_index_gzip: true,
        data_gzip,
    })
}

/// Every layout the writer makes, with the dtypes each supports.
fn layouts() -> Vec<(String, DType, Vec<usize>, PrecomputedOptions)> {
    let mut out = vec![];
    let shape = vec![11, 21, 26];
    for (enc, dtypes) in [
        (
            PrecomputedEncoding::Raw,
            vec![DType::U8, DType::U32, DType::U64, DType::F32],
        ),
        (
            PrecomputedEncoding::CompressedSegmentation,
            vec![DType::U32, DType::U64],
        ),
    ] {
        for (sname, sharding) in [
            ("unsharded", Sharding::Off),
            ("auto", Sharding::Auto),
            ("murmur", murmur_spec(false)),
        ] {
            for gzip in [false, true] {
                for &dtype in &dtypes {
                    let sharding = match sharding {
                        Sharding::Spec(_) => murmur_spec(gzip),
                        s => s,
                    };
                    let name = format!(
                        "{}_{sname}_{}_{dtype}",
                        if enc == PrecomputedEncoding::Raw {
                            "raw"
                        } else {
                            "cseg"
                        },
                        if gzip { "gzip" } else { "plain" }
                    );
                    out.push((
                        name,
                        dtype,
                        shape.clone(),
                        options(enc, sharding, gzip, [4, 8, 8]),
                    ));
                }
            }
        }
    }
    out.push((
        "multichannel_raw_u8".into(),
        DType::U8,
        vec![3, 11, 21, 26],
        options(PrecomputedEncoding::Raw, Sharding::Off, false, [4, 8, 8]),
    ));
    out.push((
        "multichannel_cseg_u64".into(),
        DType::U64,
        vec![2, 11, 21, 26],
        options(
            PrecomputedEncoding::CompressedSegmentation,
            Sharding::Off,
            true,
            [4, 8, 8],
        ),
    ));
    out.push((
        "multichannel_cseg_u32_sharded".into(),
        DType::U32,
        vec![2, 11, 21, 26],
        options(
            PrecomputedEncoding::CompressedSegmentation,
            Sharding::Auto,
            true,
            [4, 8, 8],
        ),
    ));
    out
}

#[test]
fn every_layout_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for (name, dtype, shape, opts) in layouts() {
        let data = volume(&shape, dtype, 1);
        let path = dir.path().join(format!("{name}.precomputed"));
        let v = write_precomputed(&path, &data, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.read_all().unwrap(), data, "{name}");
        assert_eq!(v.resolution_nm(), [40.0, 4.0, 4.5]);
        for roi in probe_regions(v.shape()) {
            assert_eq!(
                v.read_roi(&roi).unwrap(),
                data.crop(&roi).unwrap(),
                "{name} {roi}"
            );
        }
        let files = listing(&path.join("4.5_4_40"));
        let sharded = files.iter().any(|f| f.ends_with(".shard"));
        assert_eq!(sharded, opts.sharding != Sharding::Off, "{name}: {files:?}");
        let gz = files.iter().any(|f| f.ends_with(".gz"));
        assert_eq!(gz, opts.gzip && opts.sharding == Sharding::Off, "{name}");
    }
}

#[test]
fn python_reads_our_volumes() {
    if !python_has(&["numpy", "tensorstore", "compressed_segmentation"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = vec![];
    for (name, dtype, shape, mut opts) in layouts() {
        // Default 8³ blocks as neuroglancer writes them, and odd ones.
        if name.contains("u32") {
            opts.block_shape = [8, 8, 8];
        }
        let data = volume(&shape, dtype, 7);
        write_precomputed(dir.path().join(format!("{name}.precomputed")), &data, &opts).unwrap();
        em_io::write_npy(&dir.path().join(format!("{name}.npy")), &data).unwrap();
        manifest.push(serde_json::json!({"name": format!("{name}.precomputed"), "expected": format!("{name}.npy")}));
    }
    std::fs::write(
        dir.path().join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let stdout = run_python_check("check_precomputed.py", &[dir.path()]);
    eprintln!("{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        manifest.len(),
        "{stdout}"
    );
    assert!(stdout.contains("byte-identical"), "{stdout}");
}

/// Counts voxels reported, and the shard files already written into the staging
/// directory each time a block is reported.
struct Watch {
    parent: PathBuf,
    voxels: std::sync::atomic::AtomicU64,
    shards: std::sync::Mutex<Vec<usize>>,
}

impl em_core::Progress for Watch {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, n: u64) {
        self.voxels
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        let staged = std::fs::read_dir(&self.parent)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".copy.precomputed")
            })
            .map(|e| {
                walk(&e.path())
                    .iter()
                    .filter(|f| f.ends_with(".shard"))
                    .count()
            })
            .sum();
        self.shards.lock().unwrap().push(staged);
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn streaming_copy_goes_block_by_block_and_completes_shards_as_it_goes() {
    let shape = [40usize, 12, 9];
    let data = volume(&shape, DType::U64, 3);
    let src = InMemoryVolume::new(data.clone(), "source")
        .with_chunk_shape(&[5, 12, 9])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for sharding in [Sharding::Off, Sharding::Auto, murmur_spec(true)] {
        let path = dir.path().join("copy.precomputed");
        // 2³ chunks: a grid of 5 × 6 × 20 chunks, three automatic shards of 8 chunk layers.
        let opts = PrecomputedOptions {
            encoding: PrecomputedEncoding::CompressedSegmentation,
            chunk_shape: Some([2, 2, 2]),
            sharding,
            ..Default::default()
        };
        let watch = Watch {
            parent: dir.path().to_path_buf(),
            voxels: 0.into(),
            shards: Default::default(),
        };
        let v = copy_to_precomputed(&src, &path, &opts, &watch).unwrap();
        assert_eq!(v.read_all().unwrap(), data);
        assert_eq!(watch.voxels.into_inner(), 40 * 12 * 9);
        if sharding == Sharding::Auto {
            // One block per shard along z, each shard written as soon as it is complete.
            assert_eq!(watch.shards.into_inner().unwrap(), vec![1, 2, 3]);
        }
        std::fs::remove_dir_all(&path).unwrap();
    }
}

#[test]
fn regions_are_written_in_any_order_but_whole_chunks_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = volume(&[9, 10, 11], DType::U32, 4)
        .into_typed::<u32>()
        .unwrap();
    for sharding in [Sharding::Off, Sharding::Auto] {
        let path = dir.path().join("r.precomputed");
        let opts = PrecomputedOptions {
            chunk_shape: Some([3, 4, 4]),
            sharding,
            ..Default::default()
        };
        let w = PrecomputedWriter::create(&path, &[9, 10, 11], DType::U32, &opts).unwrap();
        for z in [6u64, 0, 3] {
            let roi = Roi::new([z, 0, 0], [3, 10, 11]).unwrap();
            w.write_region(&roi, &AnyArray::from(data.clone()).crop(&roi).unwrap())
                .unwrap();
        }
        let misaligned = Roi::new([1, 0, 0], [3, 10, 11]).unwrap();
        let e = w
            .write_region(&misaligned, &AnyArray::zeros(DType::U32, &[3, 10, 11]))
            .unwrap_err();
        assert!(e.to_string().contains("not chunk-aligned"), "{e}");
        let wrong = w.write_region(
            &Roi::from_shape(vec![9, 10, 11]),
            &AnyArray::zeros(DType::U8, &[9, 10, 11]),
        );
        assert!(wrong.is_err());
        if sharding == Sharding::Auto {
            let again = Roi::new([0, 0, 0], [3, 4, 4]).unwrap();
            let e = w
                .write_region(&again, &AnyArray::zeros(DType::U32, &[3, 4, 4]))
                .unwrap_err();
            assert!(e.to_string().contains("written twice"), "{e}");
        }
        let v = w.commit().unwrap();
        assert_eq!(v.read_all().unwrap(), AnyArray::from(data.clone()));
        // Read-only once written.
        let e = v
            .write_roi(
                &Roi::from_shape(vec![1, 1, 1]),
                &AnyArray::zeros(DType::U32, &[1, 1, 1]),
            )
            .unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        std::fs::remove_dir_all(&path).unwrap();
    }
}

#[test]
fn gzip_chunks_read_with_or_without_the_gz_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.precomputed");
    let data = volume(&[5, 6, 7], DType::U16, 2);
    let opts = PrecomputedOptions {
        chunk_shape: Some([5, 6, 7]),
        ..Default::default()
    };
    write_precomputed(&path, &data, &opts).unwrap();
    let chunk = path.join("1_1_1/0-7_0-6_0-5");
    let raw = std::fs::read(&chunk).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let gz = gz.finish().unwrap();
    // Gzip data under the plain name (as a server that stores it compressed) …
    std::fs::write(&chunk, &gz).unwrap();
    assert_eq!(em_io::read(&path).unwrap(), data);
    // … and under NAME.gz (CloudVolume).
    std::fs::remove_file(&chunk).unwrap();
    std::fs::write(path.join("1_1_1/0-7_0-6_0-5.gz"), &gz).unwrap();
    assert_eq!(em_io::read(&path).unwrap(), data);
}

#[test]
fn writes_refuse_what_precomputed_cannot_hold_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.precomputed");
    let f32s = AnyArray::zeros(DType::F32, &[2, 2, 2]);
    let cseg = PrecomputedOptions {
        encoding: PrecomputedEncoding::CompressedSegmentation,
        ..Default::default()
    };
    for (data, opts) in [
        (f32s.clone(), cseg.clone()),
        (
            AnyArray::zeros(DType::F64, &[2, 2, 2]),
            PrecomputedOptions::default(),
        ),
        (
            AnyArray::zeros(DType::U8, &[2, 2]),
            PrecomputedOptions::default(),
        ),
        (
            f32s.clone(),
            PrecomputedOptions {
                chunk_shape: Some([0, 1, 1]),
                ..Default::default()
            },
        ),
        (
            f32s.clone(),
            PrecomputedOptions {
                voxel_size: [1.0, f64::NAN, 1.0],
                ..Default::default()
            },
        ),
    ] {
        assert!(write_precomputed(&path, &data, &opts).is_err());
        assert_eq!(listing(dir.path()), Vec::<String>::new());
    }
    // A writer dropped before commit leaves nothing, not even its staging directory.
    let w = PrecomputedWriter::create(&path, &[4, 4, 4], DType::U8, &PrecomputedOptions::default())
        .unwrap();
    w.write_region(
        &Roi::from_shape(vec![4, 4, 4]),
        &AnyArray::zeros(DType::U8, &[4, 4, 4]),
    )
    .unwrap();
    drop(w);
    assert_eq!(listing(dir.path()), Vec::<String>::new());
    // A failing write into an existing volume keeps the old one.
    let old = volume(&[4, 4, 4], DType::U32, 1);
    write_precomputed(&path, &old, &PrecomputedOptions::default()).unwrap();
    assert!(write_precomputed(&path, &f32s, &cseg).is_err());
    assert_eq!(em_io::read(&path).unwrap(), old);
    assert_eq!(listing(dir.path()), vec!["x.precomputed".to_string()]);
}

// ---------------------------------------------------------------- malformed input

const INFO: &str = r#"{"@type":"neuroglancer_multiscale_volume","type":"segmentation","data_type":"uint32",
 "num_channels":1,"scales":[{"key":"s0","size":[4,4,4],"voxel_offset":[0,0,0],"resolution":[1,1,1],
 "chunk_sizes":[[4,4,4]],"encoding":ENCSHARD}]}"#;

fn make(dir: &Path, info: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join(format!("v{}.precomputed", listing(dir).len()));
    std::fs::create_dir_all(path.join("s0")).unwrap();
    std::fs::write(path.join("info"), info).unwrap();
    for (name, bytes) in files {
        std::fs::write(path.join("s0").join(name), bytes).unwrap();
    }
    path
}

fn info(encoding: &str, shard: &str) -> String {
    INFO.replace("ENC", encoding).replace("SHARD", shard)
}

const RAW: &str = r#""raw""#;
const CSEG: &str = r#""compressed_segmentation","compressed_segmentation_block_size":[2,2,2]"#;

fn read_err(path: &Path) -> String {
    match em_io::read(path) {
        Ok(_) => panic!("{} read without error", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_info_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = info(RAW, "");
    for (from, to, says) in [
        (
            "neuroglancer_multiscale_volume",
            "neuroglancer_mesh",
            "@type",
        ),
        ("\"size\":[4,4,4]", "\"size\":[4,4]", "scales[0].size"),
        ("[[4,4,4]]", "[[4,0,4]]", "scales[0].chunk_sizes[0]"),
        (
            "\"data_type\":\"uint32\"",
            "\"data_type\":\"complex64\"",
            "data_type",
        ),
        ("\"num_channels\":1,", "", "num_channels: missing"),
        (
            "\"encoding\":\"raw\"",
            "\"encoding\":\"compressed_segmentation\"",
            "compressed_segmentation_block_size: missing",
        ),
    ] {
        let text = base.replace(from, to);
        assert_ne!(text, base);
        let e = read_err(&make(dir.path(), &text, &[]));
        assert!(e.contains(says) && e.contains("info"), "{says}: {e}");
    }
    let jpeg = make(dir.path(), &base.replace("\"raw\"", "\"jpeg\""), &[]);
    assert!(read_err(&jpeg).contains("jpeg"));
    let e = read_err(&dir.path().join("missing.precomputed"));
    assert!(e.contains("missing.precomputed"), "{e}");
}

#[test]
fn corrupt_chunks_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let raw = info(RAW, "");
    let short = make(dir.path(), &raw, &[("0-4_0-4_0-4", &[0u8; 255])]);
    let e = read_err(&short);
    assert!(
        e.contains("0-4_0-4_0-4") && e.contains("255 bytes") && e.contains("256"),
        "{e}"
    );
    let bad_gzip = make(
        dir.path(),
        &raw,
        &[("0-4_0-4_0-4", &[0x1f, 0x8b, 8, 0, 1, 2, 3])],
    );
    assert!(read_err(&bad_gzip).contains("gzip"));

    let cseg_info = info(CSEG, "");
    let good = cseg::encode(&(0..64u32).collect::<Vec<_>>(), [4, 4, 4], 1, [2, 2, 2]).unwrap();
    let ok = make(dir.path(), &cseg_info, &[("0-4_0-4_0-4", &good)]);
    assert_eq!(
        em_io::read(&ok)
            .unwrap()
            .into_typed::<u32>()
            .unwrap()
            .as_slice()
            .unwrap(),
        &(0..64).collect::<Vec<_>>()[..]
    );
    let mut bad_bits = good.clone();
    bad_bits[4 + 3] = 5; // first block header: bit width 5
    assert!(
        read_err(&make(dir.path(), &cseg_info, &[("0-4_0-4_0-4", &bad_bits)]))
            .contains("bit width 5")
    );
    let mut bad_table = good.clone();
    bad_table[4..7].copy_from_slice(&[0xff, 0xff, 0x7f]); // lookup table far past the end
    assert!(read_err(&make(
        dir.path(),
        &cseg_info,
        &[("0-4_0-4_0-4", &bad_table)]
    ))
    .contains("lookup-table"));
    let mut bad_values = good.clone();
    bad_values[8..12].copy_from_slice(&u32::MAX.to_le_bytes()); // packed values past the end
    assert!(read_err(&make(
        dir.path(),
        &cseg_info,
        &[("0-4_0-4_0-4", &bad_values)]
    ))
    .contains("past the end"));
    let e = read_err(&make(
        dir.path(),
        &cseg_info,
        &[("0-4_0-4_0-4", &good[..10])],
    ));
    assert!(
        e.contains("0-4_0-4_0-4") && e.contains("compressed_segmentation"),
        "{e}"
    );
}

const SHARDING: &str = r#","sharding":{"@type":"neuroglancer_uint64_sharded_v1","preshift_bits":0,"hash":"identity","minishard_bits":1,"shard_bits":0}"#;

#[test]
fn truncated_or_inconsistent_shards_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sharded = info(RAW, SHARDING);
    // Shard index: minishard 0 holds the index at bytes 256..280 after the 32-byte index.
    let mut good = vec![0u8; 32];
    good[..8].copy_from_slice(&256u64.to_le_bytes());
    good[8..16].copy_from_slice(&280u64.to_le_bytes());
    good[16..32].copy_from_slice(&[0; 16]);
    let chunk: Vec<u8> = (0..64u32).flat_map(|v| v.to_le_bytes()).collect();
    good.extend_from_slice(&chunk);
    for w in [0u64, 0, 256] {
        good.extend_from_slice(&w.to_le_bytes());
    }
    let ok = make(dir.path(), &sharded, &[("0.shard", &good)]);
    assert_eq!(
        em_io::read(&ok)
            .unwrap()
            .into_typed::<u32>()
            .unwrap()
            .as_slice()
            .unwrap(),
        &(0..64).collect::<Vec<_>>()[..]
    );
    for cut in [10, 40, good.len() - 1] {
        let e = read_err(&make(dir.path(), &sharded, &[("0.shard", &good[..cut])]));
        assert!(
            e.contains("0.shard") && e.contains("past the end"),
            "{cut}: {e}"
        );
    }
    let mut huge = good.clone();
    huge[32 + 256 + 16..32 + 256 + 24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(read_err(&make(dir.path(), &sharded, &[("0.shard", &huge)])).contains("0.shard"));
    let mut backwards = good.clone();
    backwards[8..16].copy_from_slice(&100u64.to_le_bytes());
    assert!(
        read_err(&make(dir.path(), &sharded, &[("0.shard", &backwards)]))
            .contains("before it starts")
    );
    // A missing shard reads as zeros.
    let empty = make(dir.path(), &sharded, &[]);
    assert_eq!(
        em_io::read(&empty).unwrap(),
        AnyArray::zeros(DType::U32, &[4, 4, 4])
    );
}

fn cases() -> u32 {
    std::env::var("EM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn label_array(shape: &[usize], values: &[u64], wide: bool) -> AnyArray {
    let n: usize = shape.iter().product();
    let v: Vec<u64> = (0..n).map(|i| values[i % values.len()]).collect();
    if wide {
        ArrayD::from_shape_vec(shape.to_vec(), v).unwrap().into()
    } else {
        ArrayD::from_shape_vec(shape.to_vec(), v.iter().map(|&x| x as u32).collect())
            .unwrap()
            .into()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_volumes_round_trip(
        shape in prop::collection::vec(1usize..14, 3),
        channels in 1usize..3,
        chunk in prop::collection::vec(1u64..9, 3),
        block in prop::collection::vec(1u64..6, 3),
        values in prop::collection::vec(prop_oneof![0u64..4, any::<u64>()], 1..40),
        cseg_enc in any::<bool>(),
        wide in any::<bool>(),
        sharding in 0..3u8,
        gzip in any::<bool>(),
    ) {
        let full: Vec<usize> = if channels > 1 { [vec![channels], shape.clone()].concat() } else { shape.clone() };
        let data = label_array(&full, &values, wide);
        let dir = tempfile::tempdir().unwrap();
        let opts = PrecomputedOptions {
            encoding: if cseg_enc { PrecomputedEncoding::CompressedSegmentation } else { PrecomputedEncoding::Raw },
            chunk_shape: Some([chunk[0], chunk[1], chunk[2]]),
            block_shape: [block[0], block[1], block[2]],
            gzip,
            sharding: [Sharding::Off, Sharding::Auto, murmur_spec(gzip)][sharding as usize],
            ..Default::default()
        };
        let v = write_precomputed(dir.path().join("p.precomputed"), &data, &opts).unwrap();
        prop_assert_eq!(v.read_all().unwrap(), data.clone());
        for roi in probe_regions(v.shape()) {
            prop_assert_eq!(v.read_roi(&roi).unwrap(), data.crop(&roi).unwrap());
        }
    }

    #[test]
    fn cseg_decode_inverts_encode(
        size in prop::collection::vec(1usize..12, 3),
        block in prop::collection::vec(1usize..9, 3),
        channels in 1usize..3,
        values in prop::collection::vec(any::<u64>(), 1..70),
        distinct in 1usize..70,
    ) {
        let n = size.iter().product::<usize>() * channels;
        let v: Vec<u64> = (0..n).map(|i| values[(i * 7 + i / 5) % distinct.min(values.len())]).collect();
        let (s, b) = ([size[0], size[1], size[2]], [block[0], block[1], block[2]]);
        let bytes = cseg::encode(&v, s, channels, b).unwrap();
        prop_assert_eq!(cseg::decode::<u64>(&bytes, s, channels, b).unwrap(), v.clone());
        let narrow: Vec<u32> = v.iter().map(|&x| x as u32).collect();
        let bytes = cseg::encode(&narrow, s, channels, b).unwrap();
        prop_assert_eq!(cseg::decode::<u32>(&bytes, s, channels, b).unwrap(), narrow);
    }

    #[test]
    fn corrupt_cseg_chunks_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let values: Vec<u64> = (0..5 * 6 * 7).map(|i| (i % 9) as u64 * 1_000_000_007).collect();
        let mut bytes = cseg::encode(&values, [5, 6, 7], 1, [2, 4, 3]).unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if cut.index(4) == 0 {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = cseg::decode::<u64>(&bytes, [5, 6, 7], 1, [2, 4, 3]);
    }

    #[test]
    fn corrupt_shards_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.precomputed");
        let data = volume(&[6, 7, 8], DType::U64, 5);
        let opts = PrecomputedOptions {
            encoding: PrecomputedEncoding::CompressedSegmentation,
            chunk_shape: Some([3, 4, 4]),
            sharding: murmur_spec(cut.index(2) == 0),
            ..Default::default()
        };
        write_precomputed(&path, &data, &opts).unwrap();
        let shards: Vec<PathBuf> = std::fs::read_dir(path.join("1_1_1")).unwrap().map(|e| e.unwrap().path()).collect();
        let file = &shards[cut.index(shards.len())];
        let mut bytes = std::fs::read(file).unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if cut.index(3) == 0 {
            bytes.truncate(cut.index(bytes.len()));
        }
        std::fs::write(file, &bytes).unwrap();
        if let Ok(a) = em_io::read(&path) {
            prop_assert_eq!(a.shape(), &[6, 7, 8]);
        }
    }
}
