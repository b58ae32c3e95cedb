//! `em augment`: applies a preset's transforms one at a time and as a whole to a volume and
//! writes PNG montages (z-slices before and after, each transform named) so a person can
//! see what a preset does.

use std::path::PathBuf;

use anyhow::Context;
use em_augment::{Pipeline, Sample, Step, Transform};
use em_io::png::Canvas;
use ndarray::{Array3, Array4, Axis, Ix3, Ix4};

/// Arguments of `em augment`.
#[derive(clap::Args, Debug)]
pub(crate) struct AugmentArgs {
    /// Preset name (light, realistic, heavy, superres, instance, banis, em_neuron) or a
    /// TOML file.
    #[arg(long, default_value = "realistic")]
    preset: String,
    /// Image volume `(Z, Y, X)` or `(C, Z, Y, X)` (uint8 is scaled to [0, 1]); without it,
    /// a built-in synthetic neuron volume with its labels.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Label volume moving with the image (drawn in colour).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Where the PNGs go (created).
    #[arg(long)]
    out_dir: PathBuf,
    /// Seed of the random draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// z-slices shown per montage.
    #[arg(long, default_value_t = 3)]
    slices: usize,
    /// Crop the input to at most this z,y,x before augmenting (keeps montages readable).
    #[arg(long, value_delimiter = ',')]
    crop: Option<Vec<usize>>,
}

pub(crate) fn run(a: &AugmentArgs) -> anyhow::Result<()> {
    let pipeline = Pipeline::load(&a.preset)?;
    anyhow::ensure!(a.slices >= 1, "--slices must be at least 1");
    let sample = load_sample(a, pipeline.anisotropic)?;
    pipeline
        .check(sample.shape())
        .with_context(|| format!("preset {} on a {:?} volume", a.preset, sample.shape()))?;
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;

    // One montage per transform (each candidate of a one_of on its own), forced to fire.
    let mut singles: Vec<(String, Transform)> = Vec::new();
    for step in &pipeline.transforms {
        match &step.transform {
            Transform::OneOf { transforms } => {
                for c in transforms {
                    singles.push((
                        format!("one_of: {}", c.transform.name()),
                        c.transform.clone(),
                    ));
                }
            }
            Transform::Mixup { .. } => {} // needs a batch; shown in the pipeline montage
            t => singles.push((format!("{} (p {})", t.name(), step.p), t.clone())),
        }
    }
    let mut written = Vec::new();
    for (i, (title, t)) in singles.iter().enumerate() {
        let single = Pipeline {
            description: String::new(),
            anisotropic: pipeline.anisotropic,
            transforms: vec![Step {
                p: 1.0,
                transform: t.clone(),
            }],
        };
        let mut after = sample.clone();
        single
            .apply_seeded(&mut after, a.seed)
            .with_context(|| title.clone())?;
        let path = a.out_dir.join(format!("{:02}_{}.png", i + 1, t.name()));
        let settings = settings_line(t);
        montage(&sample, &after, title, &settings, a.slices).save_png(&path)?;
        written.push(path);
    }
    // The whole pipeline on four seeds.
    let path = a.out_dir.join("pipeline.png");
    pipeline_montage(&pipeline, &sample, a.seed, a.slices)?.save_png(&path)?;
    written.push(path);
    for p in &written {
        println!("{}", p.display());
    }
    Ok(())
}

fn load_sample(a: &AugmentArgs, anisotropic: bool) -> anyhow::Result<Sample> {
    let mut sample = match &a.input {
        None => {
            let (shape, z_anisotropy) = if anisotropic {
                ([16, 128, 128], 3.0)
            } else {
                ([64, 64, 64], 1.0)
            };
            let settings = em_data::synth::NeuronOptions {
                z_anisotropy,
                ..Default::default()
            };
            let v = em_data::synth::neurons(shape, a.seed, &settings);
            Sample::new(v.image.insert_axis(Axis(0))).with_label(v.labels)
        }
        Some(path) => {
            let arr = em_io::read(path)?;
            let f = arr.to_intensity_f32();
            let image: Array4<f32> = match f.ndim() {
                3 => f.into_dimensionality::<Ix3>()?.insert_axis(Axis(0)),
                4 => f.into_dimensionality::<Ix4>()?,
                _ => anyhow::bail!(
                    "{}: shape {:?}; give (Z, Y, X) or (C, Z, Y, X)",
                    path.display(),
                    arr.shape()
                ),
            };
            let mut s = Sample::new(image);
            if let Some(lp) = &a.labels {
                let (l, _) = em_core::to_labels_and_mask::<u32>(&em_io::read(lp)?)?;
                let l: Array3<u32> = l
                    .into_dimensionality::<Ix3>()
                    .with_context(|| format!("{}: labels must be (Z, Y, X)", lp.display()))?;
                s = s.with_label(l);
            }
            s.check()?;
            s
        }
    };
    if let Some(c) = &a.crop {
        anyhow::ensure!(c.len() == 3, "--crop takes z,y,x");
        let [z, y, x] = sample.shape();
        let (cz, cy, cx) = (c[0].min(z), c[1].min(y), c[2].min(x));
        let (oz, oy, ox) = ((z - cz) / 2, (y - cy) / 2, (x - cx) / 2);
        let r = ndarray::s![oz..oz + cz, oy..oy + cy, ox..ox + cx];
        let image = sample
            .image
            .slice(ndarray::s![.., oz..oz + cz, oy..oy + cy, ox..ox + cx])
            .to_owned();
        let labels = sample
            .labels
            .iter()
            .map(|l| l.slice(r).to_owned())
            .collect();
        sample = Sample {
            image,
            labels,
            masks: Vec::new(),
            valid: None,
        };
    }
    Ok(sample)
}

/// The transform's settings on one line (`key = value, …`).
fn settings_line(t: &Transform) -> String {
    toml::to_string(t)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("type ="))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(", ")
}

fn z_slices(nz: usize, n: usize) -> Vec<usize> {
    let n = n.min(nz);
    (0..n).map(|i| (2 * i + 1) * nz / (2 * n)).collect()
}

const GAP: usize = 6;
const LEFT: usize = 64;
const TEXT: [u8; 3] = [20, 20, 20];

fn slice_scale(ny: usize, nx: usize) -> usize {
    if ny.max(nx) <= 96 {
        2
    } else {
        1
    }
}

/// Before and after, image and labels, at a few z-slices; voxels the loss ignores after the
/// transform are tinted red.
fn montage(before: &Sample, after: &Sample, title: &str, settings: &str, n: usize) -> Canvas {
    let [nz, ny, nx] = before.shape();
    let scale = slice_scale(ny, nx);
    let zs = z_slices(nz, n);
    let rows: Vec<&str> = if before.labels.is_empty() {
        vec!["before", "after"]
    } else {
        vec!["before", "after", "labels"]
    };
    let (tw, th) = (nx * scale, ny * scale);
    let width = (LEFT + zs.len() * (tw + GAP)).max(8 * settings.len().min(160) + 2 * GAP);
    let top = 52;
    let mut c = Canvas::new(width, top + rows.len() * (th + GAP), [250, 250, 250]);
    c.text(GAP, 6, title, TEXT, 2);
    c.text(
        GAP,
        28,
        &settings.chars().take(160).collect::<String>(),
        [90, 90, 90],
        1,
    );
    let (lo, hi) = range(&before.image);
    for (row, name) in rows.iter().enumerate() {
        let y0 = top + row * (th + GAP);
        c.text(4, y0 + th / 2, name, TEXT, 1);
        for (col, &z) in zs.iter().enumerate() {
            let x0 = LEFT + col * (tw + GAP);
            match *name {
                "before" => c.gray(
                    x0,
                    y0,
                    before.image.slice(ndarray::s![0, z, .., ..]),
                    lo,
                    hi,
                    scale,
                ),
                "after" => {
                    c.gray(
                        x0,
                        y0,
                        after.image.slice(ndarray::s![0, z, .., ..]),
                        lo,
                        hi,
                        scale,
                    );
                    if let Some(v) = &after.valid {
                        tint_invalid(&mut c, x0, y0, v, z, scale);
                    }
                }
                _ => c.labels(x0, y0, after.labels[0].index_axis(Axis(0), z), scale),
            }
            if row == 0 {
                c.text(x0, top - 10, &format!("z {z}"), [90, 90, 90], 1);
            }
        }
    }
    c
}

fn tint_invalid(c: &mut Canvas, x0: usize, y0: usize, v: &Array3<u8>, z: usize, scale: usize) {
    for ((r, col), &m) in v.index_axis(Axis(0), z).indexed_iter() {
        if m == 0 {
            for dy in 0..scale {
                for dx in 0..scale {
                    let (x, y) = (x0 + col * scale + dx, y0 + r * scale + dy);
                    if let Some(p) = c.get(x, y) {
                        c.set(
                            x as i64,
                            y as i64,
                            [p[0].saturating_add(90), p[1] / 2, p[2] / 2],
                        );
                    }
                }
            }
        }
    }
}

fn range(a: &Array4<f32>) -> (f32, f32) {
    let lo = a.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// Four seeds of the whole pipeline (as a batch, so `mixup` shows), one row each, with the
/// transforms that ran.
fn pipeline_montage(p: &Pipeline, sample: &Sample, seed: u64, n: usize) -> anyhow::Result<Canvas> {
    let [nz, ny, nx] = sample.shape();
    let scale = slice_scale(ny, nx);
    let zs = z_slices(nz, n);
    let (tw, th) = (nx * scale, ny * scale);
    let seeds = 4;
    let mut batch: Vec<Sample> = (0..seeds).map(|_| sample.clone()).collect();
    let ran = p.apply_batch(&mut batch, seed)?;
    let row_h = th + 16 + GAP;
    // The original's first slice, then the augmented slices.
    let start = tw + 2 * GAP;
    let width = (start + zs.len() * (tw + GAP)).max(520);
    let mut c = Canvas::new(width, 30 + seeds * row_h, [250, 250, 250]);
    c.text(GAP, 6, "whole pipeline, 4 samples", TEXT, 2);
    let (lo, hi) = range(&sample.image);
    for (i, s) in batch.iter().enumerate() {
        let y0 = 30 + i * row_h;
        let names = if ran[i].is_empty() {
            "(nothing fired)".to_string()
        } else {
            ran[i].join(", ")
        };
        c.text(GAP, y0, &names, [90, 90, 90], 1);
        c.gray(
            GAP,
            y0 + 12,
            sample.image.slice(ndarray::s![0, zs[0], .., ..]),
            lo,
            hi,
            scale,
        );
        for (col, &z) in zs.iter().enumerate() {
            let x0 = start + col * (tw + GAP);
            c.gray(
                x0,
                y0 + 12,
                s.image.slice(ndarray::s![0, z, .., ..]),
                lo,
                hi,
                scale,
            );
            if let Some(v) = &s.valid {
                tint_invalid(&mut c, x0, y0 + 12, v, z, scale);
            }
        }
    }
    Ok(c)
}
