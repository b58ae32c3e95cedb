//! Times `affinity_cc` on an affinity `.npy` with 1 and 2 threads; `tools/bench-decode` runs it
//! beside cc3d and a BANIS-style numba flood fill on the same data.
//!
//! ```text
//! cargo run --release --example decode_throughput -- AFF.npy OUT_SEG.npy [REPEATS] [THRESHOLD]
//! ```
//! Prints one JSON object per line, `{"threads": t, "seconds": s, "components": k}` (best of
//! REPEATS, default 3), and writes the segmentation for the output comparison.

use std::time::Instant;

use em_connectomics::core::AnyArray;
use em_connectomics::decode::{affinity_cc, CcOptions};
use ndarray::Array4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: decode_throughput AFF.npy OUT_SEG.npy [REPEATS] [THRESHOLD]".into());
    }
    let repeats: usize = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(3);
    let threshold: f32 = args.get(4).map(|t| t.parse()).transpose()?.unwrap_or(0.5);
    let aff: Array4<f32> = em_connectomics::io::read(&args[1])?
        .into_typed::<f32>()?
        .into_dimensionality()?;
    let mut seg = None;
    for threads in [1, 2] {
        let params = CcOptions {
            threshold,
            threads: Some(threads),
            ..CcOptions::default()
        };
        let mut best = f64::INFINITY;
        for _ in 0..repeats {
            let t = Instant::now();
            let s = affinity_cc::<f32, u32>(aff.view(), &params)?;
            best = best.min(t.elapsed().as_secs_f64());
            seg = Some(s);
        }
        let k = seg
            .as_ref()
            .and_then(|s| s.iter().max().copied())
            .unwrap_or(0);
        println!("{{\"threads\": {threads}, \"seconds\": {best}, \"components\": {k}}}");
    }
    if let Some(s) = seg {
        em_connectomics::io::write(&args[2], &AnyArray::from(s.into_dyn()))?;
    }
    Ok(())
}
