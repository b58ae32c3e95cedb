//! `em evaluate`, `em evaluate-skeletons` and `em tune`: segmentation quality against
//! ground-truth labels or skeletons.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use em_core::{EdgeStorage, VoxelSize};
use em_decode::waterz::{Scoring, WaterzOptions};
use em_decode::CcOptions;
use em_decode::MwsOptions;
use em_metrics::{
    binary_scores, erl, match_instances, Contingency, ErlReport, Skeletons, VoxelMetrics,
};
use em_train::{
    default_thresholds, tune_thresholds, TuneMethod, TuneOptions, TuneRow, MAX_THRESHOLDS,
};
use serde_json::{json, Map, Value};

use crate::guard;
use crate::progress::Bar;

/// Arguments of `em evaluate`.
#[derive(clap::Args, Debug)]
pub(crate) struct EvaluateArgs {
    /// Ground-truth labels. 0 is background: VOI and Rand ignore it (as funlib.evaluate
    /// does), IoU/Dice count it as background. −1 (in signed volumes) marks unknown voxels,
    /// left out of every metric (their count is reported).
    #[arg(long)]
    gt: PathBuf,
    /// Predicted segmentation (0 is an ordinary segment, as in funlib.evaluate).
    #[arg(long)]
    pred: PathBuf,
    /// IoU a ground-truth and a predicted instance need to match (strictly more), in [0, 1).
    #[arg(long, default_value_t = 0.5, value_parser = iou_threshold)]
    iou_threshold: f64,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `em evaluate-skeletons`.
#[derive(clap::Args, Debug)]
pub(crate) struct SkeletonArgs {
    /// Skeleton JSON, one .swc file, or a directory of .swc files. Skeleton id 0 means
    /// unlabelled (as in BANIS and funlib.evaluate): its edges count in the total length but
    /// never as correct, so number skeletons from 1 (nodes in skeleton 0 are counted and
    /// reported).
    #[arg(long)]
    skeletons: PathBuf,
    /// Predicted segmentation.
    #[arg(long)]
    pred: PathBuf,
    /// Voxel size z,y,x in nm (positions_nm default to position × this; SWC nm → voxels).
    #[arg(long, value_parser = crate::voxel_size_arg, default_value = "1,1,1")]
    voxel_size: VoxelSize,
    /// Merge thresholds k for merge-tolerant NERL (`inf` allowed); reported as `nerl_K`.
    #[arg(long, value_delimiter = ',', default_value = "5,20,100,inf")]
    merge_threshold: Vec<String>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// Decoders `em tune` can tune.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TuneMethodName {
    /// Connected components: the values are thresholds.
    Cc,
    /// waterz: the values are merge thresholds (one agglomeration for all).
    Waterz,
    /// Mutex watershed: the values are biases added to the attractive affinities.
    Mws,
}

/// Arguments of `em tune`.
#[derive(clap::Args, Debug)]
pub(crate) struct TuneArgs {
    /// Affinities `(C, Z, Y, X)` (float32, float16 or uint8).
    #[arg(long)]
    affinities: PathBuf,
    /// The decoder to tune.
    #[arg(long, value_enum, default_value = "cc")]
    method: TuneMethodName,
    /// waterz: the scoring function (see `em decode --scoring`).
    #[arg(long, default_value = "mean")]
    scoring: String,
    /// mws: offsets dz,dy,dx per channel separated by ';' (default: PyTC's 12 channels).
    #[arg(long, allow_hyphen_values = true)]
    offsets: Option<String>,
    /// mws: the leading channels that are attractive.
    #[arg(long, default_value_t = 3)]
    attractive: usize,
    /// Skeletons (JSON, .swc or a directory of .swc) to score each threshold by NERL.
    #[arg(long)]
    skeletons: Option<PathBuf>,
    /// Ground-truth labels to score each threshold by VOI / adapted Rand.
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Thresholds (mws: biases): a list `0.5,0.7` or a range `start:stop:step` (stop
    /// included), finite, at most 1000; default BANIS's sigmoid(0.2k), k = −1..11 (cc),
    /// 0.05:0.95:0.05 (waterz), -0.4:0.4:0.1 (mws).
    #[arg(long, allow_hyphen_values = true)]
    thresholds: Option<String>,
    /// Which voxel holds an edge's value.
    #[arg(long, default_value = "source")]
    storage: EdgeStorage,
    /// Channels to use.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    channels: Vec<usize>,
    /// Voxel size z,y,x in nm, for skeleton lengths.
    #[arg(long, value_parser = crate::voxel_size_arg, default_value = "1,1,1")]
    voxel_size: VoxelSize,
    /// Worker threads for decoding.
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

fn iou_threshold(s: &str) -> Result<f64, String> {
    let t: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..1.0).contains(&t) {
        Ok(t)
    } else {
        Err(format!(
            "{s}: give a number in [0, 1) (a match needs IoU strictly above it; at 1 or more \
             nothing can match)"
        ))
    }
}

fn merge_thresholds(list: &[String]) -> anyhow::Result<Vec<Option<u64>>> {
    list.iter()
        .map(|k| match k.trim() {
            "inf" | "∞" => Ok(None),
            n => n
                .parse()
                .map(Some)
                .with_context(|| format!("merge threshold {n:?}: a whole number or inf")),
        })
        .collect()
}

fn key(k: Option<u64>) -> String {
    k.map_or("nerl_inf".into(), |k| format!("nerl_{k}"))
}

/// Contingency of two volumes: in memory for small ones, chunk by chunk for zarr/HDF5.
fn contingency(gt: &PathBuf, pred: &PathBuf, bar: &Bar) -> anyhow::Result<Contingency> {
    let g = em_io::open(gt)?;
    let p = em_io::open(pred)?;
    Contingency::from_volumes(g.as_ref(), p.as_ref(), bar)
        .with_context(|| format!("comparing {} with {}", gt.display(), pred.display()))
}

fn voxel_json(m: &VoxelMetrics, table: &Contingency, iou_threshold: f64) -> Map<String, Value> {
    let b = binary_scores(table);
    let inst = match_instances(table, iou_threshold);
    let mut o = match serde_json::to_value(m) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    for (k, v) in [
        ("iou", b.iou),
        ("dice", b.dice),
        ("precision", b.precision),
        ("recall", b.recall),
        ("instance_precision", inst.precision),
        ("instance_recall", inst.recall),
        ("instance_f1", inst.f1),
        ("mean_matched_iou", inst.mean_matched_iou),
    ] {
        o.insert(k.into(), json!(v));
    }
    o.insert("n_matched".into(), json!(inst.matches.len()));
    o.insert("gt_instances".into(), json!(inst.gt_instances));
    o.insert("pred_instances".into(), json!(inst.pred_instances));
    o.insert("iou_threshold".into(), json!(iou_threshold));
    o
}

pub(crate) fn evaluate(args: &EvaluateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let bar = Bar::new();
    let table = contingency(&args.gt, &args.pred, &bar)?;
    let m = VoxelMetrics::from_contingency(&table)
        .with_context(|| format!("ground truth {}", args.gt.display()))?;
    let mut o = voxel_json(&m, &table, args.iou_threshold);
    o.insert("unknown_voxels".into(), json!(table.unknown));
    o.insert("seconds".into(), json!(start.elapsed().as_secs_f64()));
    if table.unknown > 0 {
        eprintln!(
            "note: {} ground-truth voxels are -1 (unknown) and left out of every metric",
            table.unknown
        );
    }
    if args.json {
        println!("{}", Value::Object(o));
    } else {
        println!(
            "VOI split {:.4}  merge {:.4}  (sum {:.4})\nadapted Rand error {:.4}  (Rand split {:.4}, merge {:.4})\nforeground IoU {:.4}  Dice {:.4}\ninstances matched at IoU > {}: {} of {} gt / {} pred, F1 {:.4}",
            m.voi_split, m.voi_merge, m.voi, m.arand, m.rand_split, m.rand_merge,
            o["iou"].as_f64().unwrap_or(0.0), o["dice"].as_f64().unwrap_or(0.0),
            args.iou_threshold, o["n_matched"], o["gt_instances"], o["pred_instances"],
            o["instance_f1"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// One threshold's row of `em tune --json`.
fn row_json(r: &TuneRow) -> Value {
    let mut row = Map::new();
    row.insert("threshold".into(), json!(r.threshold));
    row.insert("components".into(), json!(r.components));
    if let Some(e) = &r.erl {
        row.extend(erl_json(e));
    }
    if let Some(m) = &r.voxel {
        row.insert("voi_split".into(), json!(m.voi_split));
        row.insert("voi_merge".into(), json!(m.voi_merge));
        row.insert("voi".into(), json!(m.voi));
        row.insert("arand".into(), json!(m.arand));
    }
    Value::Object(row)
}

fn erl_json(r: &ErlReport) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("erl".into(), json!(r.erl));
    o.insert("max_erl".into(), json!(r.max_erl));
    o.insert("nerl".into(), json!(r.nerl));
    for (k, v) in &r.adapted_nerl {
        o.insert(key(*k), json!(v));
    }
    o.insert("n_mergers".into(), json!(r.n_mergers));
    o.insert("n_non0_mergers".into(), json!(r.n_non0_mergers));
    o.insert("n_splits".into(), json!(r.n_splits));
    o.insert("n_merging_segments".into(), json!(r.merging_segments.len()));
    o.insert("edges_omitted".into(), json!(r.edges.omitted));
    o.insert("edges_split".into(), json!(r.edges.split));
    o.insert("edges_merged".into(), json!(r.edges.merged));
    o.insert("edges_correct".into(), json!(r.edges.correct));
    o.insert("total_length".into(), json!(r.total_length));
    o.insert("node_voi_split".into(), json!(r.node_voi_split));
    o.insert("node_voi_merge".into(), json!(r.node_voi_merge));
    o.insert("nodes".into(), json!(r.nodes));
    o.insert("unlabelled_nodes".into(), json!(r.unlabelled_nodes));
    o
}

/// Says how many nodes lie in skeleton 0, once per command.
fn warn_unlabelled(nodes: u64) {
    if nodes > 0 {
        eprintln!(
            "warning: {nodes} skeleton nodes belong to skeleton 0, which means unlabelled (as in \
             BANIS): their edges count in the total length but never as correct; number \
             skeletons from 1 to score them"
        );
    }
}

pub(crate) fn evaluate_skeletons(args: &SkeletonArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let ks = merge_thresholds(&args.merge_threshold)?;
    let skeletons = Skeletons::read(&args.skeletons, args.voxel_size)?;
    let pred = em_io::open(&args.pred)?;
    let ids = skeletons
        .lookup_volume(pred.as_ref())
        .with_context(|| format!("looking up skeleton nodes in {}", args.pred.display()))?;
    let r = erl(&skeletons, &ids, &ks)?;
    warn_unlabelled(r.unlabelled_nodes);
    let mut o = erl_json(&r);
    o.insert("skeletons".into(), json!(skeletons.num_skeletons()));
    o.insert("seconds".into(), json!(start.elapsed().as_secs_f64()));
    if args.json {
        println!("{}", Value::Object(o));
    } else {
        let adapted: Vec<String> = r
            .adapted_nerl
            .iter()
            .map(|(k, v)| format!("{} {v:.4}", key(*k)))
            .collect();
        println!(
            "ERL {:.1} nm of max {:.1} nm: NERL {:.4}  ({})\n{} mergers, {} split edges; edges omitted {}, split {}, merged {}, correct {}",
            r.erl, r.max_erl, r.nerl, adapted.join(", "), r.n_mergers, r.n_splits,
            r.edges.omitted, r.edges.split, r.edges.merged, r.edges.correct
        );
    }
    Ok(())
}

fn parse_thresholds(s: &str) -> anyhow::Result<Vec<f32>> {
    let bad =
        || anyhow::anyhow!("--thresholds {s:?}: give a list 0.5,0.7 or a range start:stop:step");
    let list: Vec<f32> = if s.contains(':') {
        let p: Vec<f64> = s
            .split(':')
            .map(|x| x.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let [a, b, step] = p.as_slice() else {
            return Err(bad());
        };
        anyhow::ensure!(
            p.iter().all(|v| v.is_finite()),
            "--thresholds {s:?}: start, stop and step must be finite numbers"
        );
        anyhow::ensure!(
            *step > 0.0 && b >= a,
            "--thresholds {s:?}: step must be positive and stop ≥ start"
        );
        let n = ((b - a) / step + 1e-9).floor() + 1.0;
        anyhow::ensure!(
            n <= MAX_THRESHOLDS as f64,
            "--thresholds {s:?} makes {n:.0} thresholds; at most {MAX_THRESHOLDS} (use a \
             larger step)"
        );
        (0..n as usize)
            .map(|i| (a + i as f64 * step) as f32)
            .collect()
    } else {
        s.split(',')
            .map(|x| x.trim().parse::<f32>().map_err(|_| bad()))
            .collect::<anyhow::Result<_>>()?
    };
    anyhow::ensure!(
        list.iter().all(|t| t.is_finite()),
        "--thresholds {s:?}: every threshold must be a finite number"
    );
    anyhow::ensure!(
        (1..=MAX_THRESHOLDS).contains(&list.len()),
        "--thresholds {s:?}: give 1 to {MAX_THRESHOLDS} thresholds"
    );
    Ok(list)
}

impl TuneArgs {
    fn method(&self) -> anyhow::Result<TuneMethod> {
        Ok(match self.method {
            TuneMethodName::Cc => TuneMethod::Cc(CcOptions {
                channels: self.channels.clone(),
                storage: self.storage,
                threads: self.threads,
                ..CcOptions::default()
            }),
            TuneMethodName::Waterz => TuneMethod::Waterz(WaterzOptions {
                scoring: Scoring::parse(&self.scoring)?,
                storage: self.storage,
                threads: self.threads,
                ..WaterzOptions::default()
            }),
            TuneMethodName::Mws => TuneMethod::Mws(MwsOptions {
                offsets: match &self.offsets {
                    Some(o) => crate::decode::parse_offsets(o).map_err(anyhow::Error::msg)?,
                    None => MwsOptions::default().offsets,
                },
                attractive: self.attractive,
                threads: self.threads,
                ..MwsOptions::default()
            }),
        })
    }
}

pub(crate) fn tune(args: &TuneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.skeletons.is_some() || args.gt.is_some(),
        "give --skeletons (NERL) and/or --gt (VOI) to score the thresholds"
    );
    let start = Instant::now();
    let thresholds = match (&args.thresholds, args.method) {
        (Some(s), _) => parse_thresholds(s)?,
        (None, TuneMethodName::Cc) => default_thresholds(),
        (None, TuneMethodName::Waterz) => parse_thresholds("0.05:0.95:0.05")?,
        (None, TuneMethodName::Mws) => parse_thresholds("-0.4:0.4:0.1")?,
    };
    guard::threads(args.threads)?;
    if let Some((shape, elem)) = guard::peek(&args.affinities)? {
        // The affinities, and per threshold a u64 segmentation (with the ground truth's).
        let voxels = em_autoconf::bytes_of(shape.get(1..).unwrap_or(&[]), 8);
        let needed = em_autoconf::bytes_of(&shape, elem)
            .zip(voxels)
            .and_then(|(a, v)| a.checked_add(v.checked_mul(3)?));
        guard::memory(
            &format!("tuning on {}", args.affinities.display()),
            needed,
            "tune on a crop of the volume",
        )?;
    }
    let report = tune_thresholds(
        &TuneOptions {
            affinities: args.affinities.clone(),
            skeletons: args.skeletons.clone(),
            gt: args.gt.clone(),
            thresholds,
            method: args.method()?,
            voxel_size: args.voxel_size,
        },
        &Bar::new(),
    )?;
    if let Some(e) = report.rows.first().and_then(|r| r.erl.as_ref()) {
        warn_unlabelled(e.unlabelled_nodes);
    }
    let rows: Vec<Value> = report.rows.iter().map(row_json).collect();
    let best = rows.get(report.best).cloned().unwrap_or(Value::Null);
    let criterion = report.criterion;
    if args.json {
        println!(
            "{}",
            json!({"results": rows, "best": best, "criterion": criterion, "seconds": start.elapsed().as_secs_f64()})
        );
    } else {
        for r in &rows {
            let mut line = format!("threshold {:.4}:", r["threshold"].as_f64().unwrap_or(0.0));
            for k in ["nerl", "voi", "arand", "components"] {
                if let Some(v) = r.get(k) {
                    line.push_str(&format!(" {k} {v}"));
                }
            }
            println!("{line}");
        }
        println!("best ({criterion}): threshold {}", best["threshold"]);
    }
    Ok(())
}
