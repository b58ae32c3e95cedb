//! Times em-metrics on files, for `tools/bench-metrics` (which runs funlib.evaluate and
//! scikit-image on the same data).
//!
//! ```text
//! cargo run --release --example metrics_throughput -- voxel GT.npy PRED.npy [REPEATS]
//! cargo run --release --example metrics_throughput -- erl SKELETONS.json PRED.npy [REPEATS]
//! ```
//! Prints one JSON object: `seconds` (best of REPEATS, default 3, computation only — files
//! are read before timing) and the metric values.

use std::time::Instant;

use em_connectomics::core::VoxelSize;
use em_connectomics::metrics::{erl, Contingency, Skeletons, VoxelMetrics};
use ndarray::Array3;

fn labels(path: &str) -> Result<Array3<u64>, Box<dyn std::error::Error>> {
    let a = em_connectomics::io::read(path)?;
    Ok(em_connectomics::core::to_labels::<u64>(&a)?.into_dimensionality()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: metrics_throughput voxel|erl A B [REPEATS]".into());
    }
    let repeats: usize = args.get(4).map(|r| r.parse()).transpose()?.unwrap_or(3);
    let pred = labels(&args[3])?;
    let mut best = f64::INFINITY;
    match args[1].as_str() {
        "voxel" => {
            let gt = labels(&args[2])?;
            let mut out = None;
            for _ in 0..repeats {
                let t = Instant::now();
                let table = Contingency::new(gt.view(), pred.view())?;
                let m = VoxelMetrics::from_contingency(&table)?;
                best = best.min(t.elapsed().as_secs_f64());
                out = Some(m);
            }
            let m = out.ok_or("no repeat")?;
            println!(
                "{{\"seconds\": {best}, \"voi_split\": {}, \"voi_merge\": {}, \"arand\": {}, \"arand_skimage\": {}}}",
                m.voi_split, m.voi_merge, m.arand, m.arand_skimage
            );
        }
        "erl" => {
            let skeletons = Skeletons::read(&args[2], VoxelSize::new([1.0, 1.0, 1.0])?)?;
            let mut out = None;
            for _ in 0..repeats {
                let t = Instant::now();
                let ids = skeletons.lookup(pred.view())?;
                let r = erl(&skeletons, &ids, &[])?;
                best = best.min(t.elapsed().as_secs_f64());
                out = Some(r);
            }
            let r = out.ok_or("no repeat")?;
            println!(
                "{{\"seconds\": {best}, \"erl\": {}, \"max_erl\": {}, \"nerl\": {}, \"nodes\": {}}}",
                r.erl, r.max_erl, r.nerl, r.nodes
            );
        }
        other => return Err(format!("{other}: voxel or erl").into()),
    }
    Ok(())
}
