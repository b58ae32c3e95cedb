//! waterz agglomeration of an affinity file into one segmentation per threshold, through
//! `em_decode::decode_files` (what `em decode --method waterz` runs), with timings.
//!
//! ```text
//! cargo run --release -p em-decode --features files --example agglomerate -- \
//!     AFF.npy 'SEG_{threshold}.npy' [0.1,0.3,0.5] [mean] [source|destination] [threads]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use em_core::{EdgeStorage, NoProgress};
use em_decode::waterz::{Scoring, WaterzOptions};
use em_decode::{decode_files, FileDecodeOptions, Method, WaterzFiles};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [aff, out, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: agglomerate AFF OUT_{threshold} [thresholds] [scoring] [storage] [threads]"
                .into(),
        );
    };
    let thresholds = rest
        .first()
        .map_or("0.1,0.3,0.5", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<f32>, _>>()?;
    let scoring = Scoring::parse(rest.get(1).map_or("mean", String::as_str))?;
    let storage = match rest.get(2).map(String::as_str) {
        Some("source") => EdgeStorage::Source,
        _ => EdgeStorage::Destination,
    };
    let threads = rest.get(3).map(|t| t.parse()).transpose()?;
    let start = Instant::now();
    let report = decode_files(
        &FileDecodeOptions {
            affinities: PathBuf::from(aff),
            out: PathBuf::from(out),
            method: Method::Waterz(WaterzFiles {
                options: WaterzOptions {
                    thresholds,
                    scoring,
                    storage,
                    threads,
                    ..WaterzOptions::default()
                },
                ..WaterzFiles::default()
            }),
            block: None,
            label_u64: true,
            overwrite: true,
        },
        &NoProgress,
    )?;
    println!(
        "{} in {:.3} s",
        serde_json::to_string(&report.summary)?,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
