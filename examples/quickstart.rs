//! The default job until the training examples exist: build a small synthetic labelled EM
//! volume, write it in every format em-io supports, read each back lazily and report what
//! `em info` would say.
//!
//! ```text
//! cargo run --release --example quickstart [OUT_DIR]
//! ```

use std::path::PathBuf;

use em_connectomics::core::{AnyArray, NoProgress, VolumeStats};
use ndarray::ArrayD;

/// A 64×128×128 volume of 4×4×4 "cells" (labels 1..=64) with 2-voxel membranes (label 0)
/// between them, and a matching image: dark membranes, bright cytoplasm, deterministic noise.
fn synthetic(shape: [usize; 3]) -> (ArrayD<u32>, ArrayD<u8>) {
    let cell = [shape[0] / 4, shape[1] / 4, shape[2] / 4];
    let labels = ArrayD::from_shape_fn(shape.to_vec(), |ix| {
        let on_membrane = (0..3).any(|a| ix[a] % cell[a] < 2);
        if on_membrane {
            0
        } else {
            1 + ((ix[0] / cell[0]) * 16 + (ix[1] / cell[1]) * 4 + ix[2] / cell[2]) as u32
        }
    });
    let image = ArrayD::from_shape_fn(shape.to_vec(), |ix| {
        // A cheap hash as noise keeps the example free of RNG dependencies.
        let h = ((ix[0] * 73_856_093) ^ (ix[1] * 19_349_663) ^ (ix[2] * 83_492_791)) % 41;
        let base = if labels[[ix[0], ix[1], ix[2]]] == 0 {
            40
        } else {
            180
        };
        (base + h) as u8
    });
    (labels, image)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("em-quickstart"));
    std::fs::create_dir_all(&out)?;
    let (labels, image) = synthetic([64, 128, 128]);
    let labels = AnyArray::from(labels);
    let image = AnyArray::from(image);

    let mut targets = vec![
        (out.join("sample.zarr/raw"), &image),
        (out.join("sample.zarr/labels"), &labels),
        (out.join("raw.tif"), &image),
        (out.join("labels.npy"), &labels),
    ];
    if cfg!(feature = "hdf5") {
        targets.push((out.join("sample.h5/labels"), &labels));
    }
    println!(
        "synthetic volume 64 × 128 × 128 written to {}",
        out.display()
    );
    for (path, data) in targets {
        em_connectomics::io::write(&path, data)?;
        let volume = em_connectomics::io::open(&path)?;
        let stats = VolumeStats::compute(volume.as_ref(), &NoProgress)?;
        println!(
            "  {:<28} {:<8} chunks {:?}  values {}…{}  distinct non-zero {}",
            path.strip_prefix(&out)?.display().to_string(),
            volume.dtype().to_string(),
            volume.chunk_shape(),
            stats.min.unwrap_or(f64::NAN),
            stats.max.unwrap_or(f64::NAN),
            stats.label_count.map_or("-".to_string(), |n| n.to_string()),
        );
    }
    println!(
        "inspect any of them with: cargo run --release -p em-cli -- info {}",
        out.join("sample.zarr/labels").display()
    );
    Ok(())
}
