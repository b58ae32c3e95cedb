//! `em decode`: predictions → segmentation by connected components, waterz, the mutex
//! watershed, or distance/contour instances; in memory or block by block (out of core).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use em_core::EdgeStorage;
use em_decode::waterz::{DustOptions, Scoring, WaterzOptions};
use em_decode::{
    decode_files, CcOptions, ContourOptions, DecodeOptions, DistanceOptions, FileDecodeOptions,
    Flood, Method, MethodSummary, MwsFiles, MwsOptions, SmallObjectMode, WaterzFiles,
};
use em_io::ome::{PyramidKind, PyramidSummary};
use serde::Serialize;

use crate::guard;
use crate::progress::Bar;

/// Decoding methods of `em decode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MethodName {
    /// Connected components of affinities above --threshold (BANIS).
    Cc,
    /// waterz: watershed fragments, then agglomeration below each of --thresholds.
    Waterz,
    /// Mutex watershed of short- and long-range affinities (--offsets, --attractive).
    Mws,
    /// Instances from one signed-distance (or foreground) map `(Z, Y, X)` or `(1, Z, Y, X)`:
    /// seeds above --seed-threshold flooded within --foreground-threshold.
    Distance,
    /// Instances from foreground and contour (and distance) channels `(2|3, Z, Y, X)`.
    Contour,
}

/// Arguments of `em decode`.
#[derive(clap::Args, Debug)]
pub(crate) struct DecodeArgs {
    /// Affinities `(C, Z, Y, X)` (for --method distance|contour: the predicted maps):
    /// float32, float16 or uint8 (scaled by 1/255).
    #[arg(long, alias = "predictions")]
    affinities: PathBuf,
    /// Output segmentation (.npy, .tif, DIR.zarr[/array], FILE.h5/dataset). With several
    /// waterz thresholds put `{threshold}` in it: 'seg_{threshold}.zarr'.
    #[arg(long)]
    out: PathBuf,
    /// How to decode.
    #[arg(long, value_enum, default_value = "cc")]
    method: MethodName,
    #[command(flatten)]
    waterz: WaterzArgs,
    #[command(flatten)]
    mws: MwsArgs,
    #[command(flatten)]
    instances: InstanceArgs,
    #[command(flatten)]
    ome: crate::ome::OmeArgs,
    #[command(flatten)]
    pub(crate) labels: LabelOptions,
    /// Where small objects go: background, background_2d (per z-section), neighbor (merged
    /// into the most frequent label around them) or neighbor_2d.
    #[arg(long, default_value = "background")]
    small_mode: SmallObjectMode,
    /// Decode block by block with blocks of z,y,x voxels: memory stays at a few blocks per
    /// thread, whatever the volume size (out of core with zarr input and output).
    #[arg(long, value_parser = triple::<u64>)]
    block: Option<[u64; 3]>,
    /// Worker threads (default: all cores); the output is the same for any number.
    #[arg(long)]
    threads: Option<usize>,
    /// Replace an existing output array or file (never an input, a group or a directory).
    #[arg(long)]
    overwrite: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// What both `em decode` and `em slurm decode` ask of the labelling.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LabelOptions {
    /// Edges with affinity strictly above this connect (NaN and ±inf values never do; they
    /// are counted and reported).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) threshold: f32,
    /// Which voxel holds an edge's value: source (BANIS) or destination (PyTC "deepem").
    #[arg(long, default_value = "source")]
    pub(crate) storage: EdgeStorage,
    /// Channels to use (BANIS offsets: 0,1,2 short range; 3,4,5 at distance 10).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub(crate) channels: Vec<usize>,
    /// Remove objects with fewer voxels than this (0: keep all; default 0, or PyTC's 128 for
    /// --method distance|contour).
    #[arg(long)]
    pub(crate) min_size: Option<u64>,
    /// Upscale the output by integer factors z,y,x (nearest), e.g. 1,2,2.
    #[arg(long, value_parser = triple::<usize>)]
    pub(crate) scale: Option<[usize; 3]>,
    /// Label type of the output: u32 or u64.
    #[arg(long, default_value = "u32")]
    pub(crate) label_type: LabelType,
}

impl LabelOptions {
    /// The decode parameters (connected components on `threads`, `small_mode` removal).
    pub(crate) fn params(
        &self,
        small_mode: SmallObjectMode,
        threads: Option<usize>,
    ) -> DecodeOptions {
        DecodeOptions {
            cc: CcOptions {
                threshold: self.threshold,
                channels: self.channels.clone(),
                offsets: None,
                storage: self.storage,
                threads,
            },
            min_size: self.min_size.unwrap_or(0),
            small_mode,
            scale: self.scale.unwrap_or([1, 1, 1]),
        }
    }
}

/// The options of `--method waterz`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct WaterzArgs {
    /// waterz: score thresholds, one output each (default: --threshold).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    thresholds: Vec<f32>,
    /// waterz: the scoring function: mean, hist50 (PyTC's aff50_his256), hist75_nomax,
    /// quantile50, max2, min, max, or a waterz C++ type string.
    #[arg(long, default_value = "mean")]
    scoring: String,
    /// waterz: read --thresholds as percentiles (0–100) of the initial edge scores.
    #[arg(long)]
    percentile: bool,
    /// waterz: watershed voxels whose strongest edge is at or below this are background.
    #[arg(long, default_value_t = 0.0001)]
    aff_low: f32,
    /// waterz: edges at or above this always join in the watershed.
    #[arg(long, default_value_t = 0.9999)]
    aff_high: f32,
    /// waterz: approximate the merge queue with this many bins (0: exact).
    #[arg(long, default_value_t = 0)]
    discretize_queue: usize,
    /// waterz: start from these fragments `(Z, Y, X)` instead of the watershed.
    #[arg(long)]
    fragments: Option<PathBuf>,
    /// waterz: write each threshold's merges here (JSON).
    #[arg(long)]
    merge_history: Option<PathBuf>,
    /// waterz: write the region graph after each threshold here (JSON).
    #[arg(long)]
    region_graph: Option<PathBuf>,
    /// waterz: merge segments below SIZE voxels along edges of affinity ≥ WEIGHT, then drop
    /// segments below DUST voxels: SIZE,WEIGHT,DUST.
    #[arg(long, value_parser = dust)]
    dust: Option<DustOptions>,
    /// waterz with --block: voxels of context around each block for its watershed.
    #[arg(long, default_value_t = 8)]
    halo: u64,
}

impl WaterzArgs {
    /// waterz's options from the flags (`threshold` when no --thresholds are given).
    pub(crate) fn options(
        &self,
        threshold: f32,
        storage: EdgeStorage,
        threads: Option<usize>,
    ) -> anyhow::Result<WaterzOptions> {
        Ok(WaterzOptions {
            thresholds: if self.thresholds.is_empty() {
                vec![threshold]
            } else {
                self.thresholds.clone()
            },
            scoring: Scoring::parse(&self.scoring)?,
            aff_threshold_low: self.aff_low,
            aff_threshold_high: self.aff_high,
            discretize_queue: self.discretize_queue,
            storage,
            percentile: self.percentile,
            dust: self.dust,
            region_graph: self.region_graph.is_some(),
            threads,
        })
    }

    /// The waterz part of a distributed decode.
    pub(crate) fn plan(
        &self,
        threshold: f32,
        storage: EdgeStorage,
    ) -> anyhow::Result<em_decode::WaterzPlan> {
        Ok(em_decode::WaterzPlan {
            options: self.options(threshold, storage, Some(1))?,
            halo: self.halo,
            fragments: self.fragments.clone(),
            merge_history: self.merge_history.clone(),
            region_graph: self.region_graph.clone(),
        })
    }
}

/// The options of `--method mws`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct MwsArgs {
    /// mws: one dz,dy,dx per channel, separated by ';' (default: PyTC's 12 SNEMI channels).
    #[arg(long, value_parser = offsets, allow_hyphen_values = true)]
    offsets: Option<Offsets>,
    /// mws: the leading channels that are attractive; the rest are repulsive.
    #[arg(long, default_value_t = 3)]
    attractive: usize,
    /// mws: keep repulsive edges only every z,y,x voxels.
    #[arg(long, value_parser = triple::<usize>)]
    strides: Option<[usize; 3]>,
    /// mws: keep each repulsive edge with probability 1/(sz·sy·sx) instead (seeded).
    #[arg(long)]
    randomize_strides: bool,
    /// mws: seed of --randomize-strides.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// mws: only voxels where this `(Z, Y, X)` volume is non-zero are segmented.
    #[arg(long)]
    mask: Option<PathBuf>,
}

/// The options of `--method distance|contour` (defaults: PyTC's).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct InstanceArgs {
    /// distance/contour: seeds need the map (foreground) above this.
    #[arg(long)]
    seed_threshold: Option<f32>,
    /// distance/contour: the foreground is the map (foreground) above this.
    #[arg(long)]
    foreground_threshold: Option<f32>,
    /// contour: seeds need the contour below this.
    #[arg(long)]
    seed_contour_threshold: Option<f32>,
    /// contour: the foreground needs the contour below this.
    #[arg(long)]
    foreground_contour_threshold: Option<f32>,
    /// contour with a distance channel: seeds need the distance above this.
    #[arg(long)]
    seed_distance_threshold: Option<f32>,
    /// contour with a distance channel: the foreground needs the distance above this.
    #[arg(long)]
    foreground_distance_threshold: Option<f32>,
    /// distance/contour: seeds below this many voxels are dropped.
    #[arg(long)]
    min_seed_size: Option<u64>,
    /// distance/contour: unmasked (flood everything, then mask: current PyTC) or masked
    /// (flood only the foreground: scikit-image, PyTC 1.0).
    #[arg(long, value_enum, default_value = "unmasked")]
    flood: FloodName,
}

/// `--flood`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FloodName {
    Unmasked,
    Masked,
}

impl FloodName {
    fn flood(self) -> Flood {
        match self {
            FloodName::Unmasked => Flood::Unmasked,
            FloodName::Masked => Flood::Masked,
        }
    }
}

fn dust(s: &str) -> Result<DustOptions, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [size, weight, dust] = parts.as_slice() else {
        return Err(format!("{s:?}: give SIZE,WEIGHT,DUST, e.g. 100,0.3,50"));
    };
    let whole = |p: &str| {
        p.parse::<u64>()
            .map_err(|_| format!("{p:?} is not a whole number"))
    };
    Ok(DustOptions {
        size_th: whole(size)?,
        weight_th: weight
            .parse()
            .map_err(|_| format!("{weight:?} is not a number"))?,
        dust_th: whole(dust)?,
    })
}

/// Offsets parsed from `--offsets` (one value, so clap does not read it as a list).
#[derive(Clone, Debug)]
pub(crate) struct Offsets(Vec<[i64; 3]>);

fn offsets(s: &str) -> Result<Offsets, String> {
    parse_offsets(s).map(Offsets)
}

/// Parses `dz,dy,dx;dz,dy,dx;…`.
pub(crate) fn parse_offsets(s: &str) -> Result<Vec<[i64; 3]>, String> {
    s.split(';')
        .map(|o| {
            let v: Vec<i64> = o
                .split(',')
                .map(|p| p.trim().parse::<i64>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("{o:?} in {s:?}: give whole numbers dz,dy,dx"))?;
            <[i64; 3]>::try_from(v)
                .map_err(|_| format!("{o:?} in {s:?}: give three values dz,dy,dx per channel"))
        })
        .collect()
}

impl DecodeArgs {
    /// The method with its options from the flags.
    fn method(&self) -> anyhow::Result<Method> {
        Ok(match self.method {
            MethodName::Cc => Method::Cc(self.labels.params(self.small_mode, self.threads)),
            MethodName::Waterz => {
                let w = &self.waterz;
                Method::Waterz(WaterzFiles {
                    options: w.options(self.labels.threshold, self.labels.storage, self.threads)?,
                    fragments: w.fragments.clone(),
                    merge_history: w.merge_history.clone(),
                    region_graph: w.region_graph.clone(),
                    halo: w.halo,
                })
            }
            MethodName::Mws => {
                let m = &self.mws;
                let defaults = MwsOptions::default();
                Method::Mws(MwsFiles {
                    options: MwsOptions {
                        offsets: m.offsets.clone().map_or(defaults.offsets, |o| o.0),
                        attractive: m.attractive,
                        strides: m.strides.unwrap_or([1, 1, 1]),
                        randomize_strides: m.randomize_strides,
                        seed: m.seed,
                        threads: self.threads,
                    },
                    mask: m.mask.clone(),
                })
            }
            MethodName::Distance => {
                let i = &self.instances;
                let d = DistanceOptions::default();
                Method::Distance(DistanceOptions {
                    seed_threshold: i.seed_threshold.unwrap_or(d.seed_threshold),
                    foreground_threshold: i.foreground_threshold.unwrap_or(d.foreground_threshold),
                    min_seed_size: i.min_seed_size.unwrap_or(d.min_seed_size),
                    min_instance_size: self.labels.min_size.unwrap_or(d.min_instance_size),
                    small_object_mode: self.small_mode,
                    flood: i.flood.flood(),
                    ..d
                })
            }
            MethodName::Contour => {
                let i = &self.instances;
                let d = ContourOptions::default();
                Method::Contour(ContourOptions {
                    seed_threshold: i.seed_threshold.unwrap_or(d.seed_threshold),
                    foreground_threshold: i.foreground_threshold.unwrap_or(d.foreground_threshold),
                    seed_contour_threshold: i
                        .seed_contour_threshold
                        .unwrap_or(d.seed_contour_threshold),
                    foreground_contour_threshold: i
                        .foreground_contour_threshold
                        .unwrap_or(d.foreground_contour_threshold),
                    seed_distance_threshold: i
                        .seed_distance_threshold
                        .unwrap_or(d.seed_distance_threshold),
                    foreground_distance_threshold: i
                        .foreground_distance_threshold
                        .unwrap_or(d.foreground_distance_threshold),
                    min_seed_size: i.min_seed_size.unwrap_or(d.min_seed_size),
                    min_instance_size: self.labels.min_size.unwrap_or(d.min_instance_size),
                    small_object_mode: self.small_mode,
                    flood: i.flood.flood(),
                    ..d
                })
            }
        })
    }
}

/// Output label type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LabelType {
    U32,
    U64,
}

/// The `--json` summary (stable key names).
#[derive(Serialize)]
struct Summary {
    out: String,
    mode: &'static str,
    components: u64,
    removed: u64,
    voxels: u64,
    labelled_voxels: u64,
    non_finite_affinities: u64,
    blocks: u64,
    seconds: f64,
    threshold: f32,
    peak_rss_bytes: Option<u64>,
    /// With `--ome`: the pyramid levels' shapes of each output.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ome: Vec<Vec<Vec<u64>>>,
}

/// The level shapes of each pyramid written by `--ome`.
fn ome_levels(pyramids: &[PyramidSummary]) -> Vec<Vec<Vec<u64>>> {
    pyramids
        .iter()
        .map(|p| p.levels.iter().map(|l| l.shape.clone()).collect())
        .collect()
}

pub(crate) fn run(args: &DecodeArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let opts = FileDecodeOptions {
        affinities: args.affinities.clone(),
        out: args.out.clone(),
        method: args.method()?,
        block: args.block,
        label_u64: args.labels.label_type == LabelType::U64,
        overwrite: args.overwrite,
    };
    guard::threads(args.threads)?;
    args.ome.check(&[&args.out])?;
    let report = decode_files(&opts, &Bar::new())
        .with_context(|| format!("decoding {}", args.affinities.display()))?;
    let ome = args
        .ome
        .apply(&report.outputs, Some(&args.affinities), PyramidKind::Labels)?;
    let s = match report.summary {
        MethodSummary::Cc(s) => s,
        other => return report_other(args, report.mode, &other, &report.outputs, &ome, start),
    };
    let summary = Summary {
        out: args.out.display().to_string(),
        mode: report.mode,
        components: s.components,
        removed: s.removed,
        voxels: s.voxels,
        labelled_voxels: s.labelled_voxels,
        non_finite_affinities: s.non_finite,
        blocks: s.blocks,
        seconds: start.elapsed().as_secs_f64(),
        threshold: args.labels.threshold,
        peak_rss_bytes: em_core::peak_rss_bytes(),
        ome: ome_levels(&ome),
    };
    if s.non_finite > 0 {
        eprintln!(
            "warning: {} affinity values are NaN or infinite; their edges count as off (not \
             connected)",
            s.non_finite
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} components ({} removed), {} of {} voxels labelled, {:.2} s → {}",
            summary.components,
            summary.removed,
            summary.labelled_voxels,
            summary.voxels,
            summary.seconds,
            summary.out
        );
    }
    Ok(())
}

/// Prints what waterz or the mutex watershed did.
fn report_other(
    args: &DecodeArgs,
    mode: &str,
    summary: &MethodSummary,
    outputs: &[PathBuf],
    ome: &[PyramidSummary],
    start: Instant,
) -> anyhow::Result<()> {
    let seconds = start.elapsed().as_secs_f64();
    let non_finite = match summary {
        MethodSummary::Waterz(w) => w.non_finite,
        MethodSummary::Mws(m) => m.non_finite,
        MethodSummary::Cc(s) => s.non_finite,
        MethodSummary::Instances(_) => 0,
    };
    if non_finite > 0 {
        eprintln!(
            "warning: {non_finite} affinity values are NaN or infinite; they count as no \
             connection"
        );
    }
    if let MethodSummary::Waterz(w) = summary {
        if w.reordered {
            eprintln!("note: the thresholds were sorted; waterz merges in ascending order");
        }
    }
    if args.json {
        #[derive(Serialize)]
        struct Report<'a> {
            method: String,
            mode: &'a str,
            outputs: &'a [PathBuf],
            summary: &'a MethodSummary,
            seconds: f64,
            peak_rss_bytes: Option<u64>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            ome: Vec<Vec<Vec<u64>>>,
        }
        let report = Report {
            method: format!("{:?}", args.method).to_lowercase(),
            mode,
            outputs,
            summary,
            seconds,
            peak_rss_bytes: em_core::peak_rss_bytes(),
            ome: ome_levels(ome),
        };
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    match summary {
        MethodSummary::Waterz(w) => {
            println!("{} fragments, {} edges", w.fragments, w.edges);
            for (t, out) in w.thresholds.iter().zip(outputs) {
                println!(
                    "threshold {}: {} merges, {} segments → {}",
                    t.threshold,
                    t.merges,
                    t.segments,
                    out.display()
                );
            }
        }
        MethodSummary::Mws(m) => println!(
            "{} segments ({} merges, {} mutexes) → {}",
            m.segments,
            m.merges,
            m.mutexes,
            args.out.display()
        ),
        MethodSummary::Instances(i) => println!(
            "{} instances from {} seeds ({} removed) → {}",
            i.instances,
            i.seeds,
            i.removed,
            args.out.display()
        ),
        MethodSummary::Cc(_) => {}
    }
    println!("{seconds:.2} s");
    Ok(())
}

/// Parses `z,y,x` (three positive integers).
pub(crate) fn triple<T: std::str::FromStr + Default + Copy + PartialEq>(
    s: &str,
) -> Result<[T; 3], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [z, y, x] = parts.as_slice() else {
        return Err(format!("{s:?}: give three values z,y,x, e.g. 64,256,256"));
    };
    let mut out = [T::default(); 3];
    for (o, p) in out.iter_mut().zip([z, y, x]) {
        *o = p
            .parse()
            .map_err(|_| format!("{p:?} in {s:?} is not a whole number"))?;
        if *o == T::default() {
            return Err(format!("{s:?}: every value must be at least 1"));
        }
    }
    Ok(out)
}
