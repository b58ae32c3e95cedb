//! Times em-io writing and reading a volume in each format; `tools/bench-io` runs this beside
//! numpy/tifffile/zarr-python/h5py on the same data and prints the ratios.
//!
//! ```text
//! cargo run --release --features hdf5 --example io_throughput -- INPUT.npy WORK_DIR [REPEATS] [CASE,…]
//! ```
//! Prints one JSON object per line: `{"case": "...", "op": "write"|"read", "seconds": s}`
//! (the best of REPEATS runs, default 3).

use std::path::{Path, PathBuf};
use std::time::Instant;

use em_connectomics::io::{self, Compression, VolumePath, ZarrOptions, ZarrVersion};

fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: io_throughput INPUT.npy WORK_DIR [REPEATS] [CASE,...]".into());
    }
    let input = PathBuf::from(&args[1]);
    let work = Path::new(&args[2]);
    let repeats: usize = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(3);
    std::fs::create_dir_all(work)?;
    let data = io::read(&input)?;
    let chunks: Vec<u64> = data.shape().iter().map(|&n| (n as u64).min(64)).collect();

    let zarr = |version, compression| ZarrOptions {
        chunk_shape: Some(chunks.clone()),
        compression,
        version: Some(version),
    };
    let mut cases: Vec<(&str, PathBuf, Option<ZarrOptions>)> = vec![
        ("npy", work.join("rs.npy"), None),
        ("tiff", work.join("rs.tif"), None),
        (
            "zarr_v3_zstd3",
            work.join("rs_v3.zarr"),
            Some(zarr(ZarrVersion::V3, Compression::Zstd(3))),
        ),
        (
            "zarr_v2_blosc_lz4",
            work.join("rs_v2.zarr"),
            Some(zarr(ZarrVersion::V2, Compression::BloscLz4(5))),
        ),
    ];
    if cfg!(feature = "hdf5") {
        cases.push(("hdf5_gzip4", work.join("rs.h5/data"), None));
    }
    let only: Option<Vec<&str>> = args.get(4).map(|c| c.split(',').collect());
    cases.retain(|(case, _, _)| only.as_ref().is_none_or(|o| o.contains(case)));
    for (case, path, options) in cases {
        let write = best_of(repeats, || match &options {
            Some(o) => drop(io::write_zarr(&VolumePath::parse(&path).unwrap(), &data, o).unwrap()),
            None => io::write(&path, &data).unwrap(),
        });
        let read = best_of(repeats, || {
            let back = io::read(&path).unwrap();
            assert_eq!(back.shape(), data.shape());
        });
        println!("{{\"case\": \"{case}\", \"op\": \"write\", \"seconds\": {write}}}");
        println!("{{\"case\": \"{case}\", \"op\": \"read\", \"seconds\": {read}}}");
    }
    Ok(())
}
