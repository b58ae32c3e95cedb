//! The default job until the training examples exist: build a small synthetic labelled EM
//! volume, write it in every format em-io supports, read each back lazily and report what
//! `em info` would say; then make noisy affinities from the labels (as a network would
//! predict them), decode them in memory and block by block, and score the segmentation
//! against the labels with VOI, adapted Rand and skeleton NERL.
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
    let (label_array, image) = synthetic([64, 128, 128]);
    let labels = AnyArray::from(label_array.clone());
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
            stats.min.map_or(f64::NAN, |v| v.to_f64()),
            stats.max.map_or(f64::NAN, |v| v.to_f64()),
            stats.label_count.map_or("-".to_string(), |n| n.to_string()),
        );
    }
    println!(
        "inspect any of them with: cargo run --release -p em-cli -- info {}",
        out.join("sample.zarr/labels").display()
    );
    decode_and_score(&label_array, &out)?;
    Ok(())
}

/// Noisy short-range affinities of the labels (`Source` storage), decoded and scored.
fn decode_and_score(
    labels: &ArrayD<u32>,
    out: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use em_connectomics::decode::{decode, decode_blockwise, DecodeOptions};
    use em_connectomics::metrics::{erl, Contingency, Node, Skeletons, VoxelMetrics};
    let labels = labels.view().into_dimensionality::<ndarray::Ix3>()?;
    let (z, y, x) = labels.dim();
    // Affinity 0.9 between two voxels of one cell, 0.1 otherwise, with ±0.15 of noise; and
    // one hole in a membrane (all edges on) that merges two cells, which the scores show.
    let hole = |i: usize, j: usize, k: usize| {
        (20..26).contains(&i) && (30..35).contains(&j) && (40..46).contains(&k)
    };
    let aff = ndarray::Array4::from_shape_fn((3, z, y, x), |(c, i, j, k)| {
        let (pi, pj, pk) = [(i + 1, j, k), (i, j + 1, k), (i, j, k + 1)][c];
        let inside = pi < z && pj < y && pk < x;
        let same = inside && labels[[i, j, k]] != 0 && labels[[i, j, k]] == labels[[pi, pj, pk]];
        let h = ((c * 7_919 + i * 73_856_093) ^ (j * 19_349_663) ^ (k * 83_492_791)) % 1000;
        let noise = (h as f32 / 1000.0 - 0.5) * 0.3;
        if same || (inside && hole(i, j, k) && hole(pi, pj, pk)) {
            0.9 + noise
        } else {
            0.1 + noise
        }
    });
    let params = DecodeOptions {
        min_size: 10,
        ..DecodeOptions::default()
    };
    let t = std::time::Instant::now();
    let (seg, k) = decode::<f32, u32>(aff.view(), &params)?;
    let k = k.components;
    println!(
        "\ndecoded noisy affinities: {k} segments in {:.3} s (in memory)",
        t.elapsed().as_secs_f64()
    );
    // The same, block by block through zarr on disk.
    let aff_path = out.join("affinities.zarr");
    em_connectomics::io::write(&aff_path, &AnyArray::from(aff.into_dyn()))?;
    let aff_vol = em_connectomics::io::open(&aff_path)?;
    let seg_path = em_connectomics::io::VolumePath::parse(out.join("segmentation.zarr"))?;
    let options = em_connectomics::io::ZarrOptions {
        chunk_shape: Some(vec![32, 64, 64]),
        ..Default::default()
    };
    let writer = em_connectomics::io::ZarrWriter::create(
        &seg_path,
        &[z as u64, y as u64, x as u64],
        em_connectomics::core::DType::U32,
        &options,
    )?;
    let summary = decode_blockwise(
        aff_vol.as_ref(),
        writer.volume(),
        &params,
        [32, 64, 64],
        &NoProgress,
    )?;
    writer.commit()?;
    let blockwise =
        em_connectomics::io::read(out.join("segmentation.zarr"))?.into_typed::<u32>()?;
    println!(
        "decoded block by block ({} blocks) into {}: identical to in memory: {}",
        summary.blocks,
        out.join("segmentation.zarr").display(),
        blockwise == seg.clone().into_dyn()
    );
    let m = VoxelMetrics::from_contingency(&Contingency::new(labels, seg.view())?)?;
    println!(
        "VOI split {:.3}, merge {:.3}; adapted Rand error {:.3}",
        m.voi_split, m.voi_merge, m.arand
    );
    // One straight skeleton through the middle of each cell.
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for (id, ((i, j, kk), &l)) in labels.indexed_iter().enumerate() {
        if l != 0 && j % 32 == 17 && kk % 32 == 17 {
            nodes.push(Node {
                id: id as u64,
                skeleton: u64::from(l),
                position: [i as f64, j as f64, kk as f64],
                position_nm: [i as f64 * 40.0, j as f64 * 4.0, kk as f64 * 4.0],
            });
            if i > 0 && labels[[i - 1, j, kk]] == l {
                edges.push([(id - y * x) as u64, id as u64]);
            }
        }
    }
    let skeletons = Skeletons::new(nodes, &edges, "quickstart")?;
    let r = erl(&skeletons, &skeletons.lookup(seg.view())?, &[Some(5), None])?;
    println!(
        "skeletons: {} nodes; ERL {:.0} nm of {:.0} nm possible, NERL {:.3}, {} merger pairs",
        r.nodes, r.erl, r.max_erl, r.nerl, r.n_mergers
    );
    Ok(())
}
