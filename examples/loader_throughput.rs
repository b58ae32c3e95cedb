//! Patches per second from the em-data loader: random 128³ crops (+ context) of a synthetic
//! neuron volume, the `realistic` augmentation preset, BANIS affinity targets, batch 1,
//! with 1 and 2 worker threads.
//!
//! ```text
//! cargo run --release --example loader_throughput -- [PATCH=128] [BATCHES=24] [PRESET=realistic]
//! ```
//! Prints one JSON line per worker count.

use std::sync::Arc;
use std::time::Instant;

use em_connectomics::augment::Pipeline;
use em_connectomics::core::{AffinityOffsets, AnyArray, EdgeStorage, InMemoryVolume};
use em_connectomics::data::{
    synth, Dataset, Loader, LoaderOptions, PatchConfig, PatchDataset, TargetSpec,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let p: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(128);
    let batches: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(24);
    let preset = args.get(2).cloned().unwrap_or_else(|| "realistic".into());
    let context = [4, 10, 10];
    let shape = [p + 48, 2 * p, 2 * p];
    let t = Instant::now();
    let v = synth::neurons(shape, 0, &synth::NeuronOptions::default());
    let made = t.elapsed().as_secs_f64();
    let mut settings = PatchConfig::new([p; 3]);
    settings.context = context;
    let ds: Arc<dyn Dataset> = Arc::new(PatchDataset::new(
        "synthetic neurons",
        Arc::new(InMemoryVolume::new(
            AnyArray::from(v.image.into_dyn()),
            "image",
        )),
        Some(Arc::new(InMemoryVolume::new(
            AnyArray::from(v.labels.into_dyn()),
            "labels",
        ))),
        None,
        settings,
    )?);
    let pipeline = Arc::new(Pipeline::load(&preset)?);
    for workers in [1usize, 2] {
        let cfg = LoaderOptions {
            batch_size: 1,
            workers,
            prefetch: 4,
            seed: 0,
            augment: Some(pipeline.clone()),
            targets: TargetSpec::Affinities {
                offsets: AffinityOffsets::banis(),
                storage: EdgeStorage::Source,
            },
            context,
            batches: Some(batches),
        };
        let t = Instant::now();
        let mut n = 0;
        for b in Loader::new(ds.clone(), cfg, 0)? {
            n += b?.image.dim().0;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{{\"workers\": {workers}, \"patch\": {p}, \"preset\": \"{preset}\", \"patches\": {n}, \"seconds\": {s:.2}, \"patches_per_s\": {:.2}, \"volume_seconds\": {made:.1}}}",
            n as f64 / s
        );
    }
    Ok(())
}
