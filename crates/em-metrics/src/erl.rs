//! Expected run length (ERL) and its normalised and merge-tolerant variants, as
//! funlib.evaluate and BANIS compute them, plus VOI over skeleton nodes.
//!
//! A prediction segment that holds nodes of two or more skeletons is a *merger* (segment 0
//! included). Each skeleton edge is *omitted* if an end lies in segment 0, a *split* if its
//! ends lie in different segments, *merged* if both lie in one merger, else *correct*. With
//! `c` the summed length (nm) of the correct edges of a skeleton inside one segment and `L`
//! the total edge length of all skeletons, ERL = Σ c² / L over (skeleton, segment) pairs;
//! max ERL is the same with the ground truth as prediction (Σ Lₛ² / L) and NERL = ERL / max
//! ERL (skeleton 0 is unlabelled there, but its length counts in L; skeletons numbered from
//! 0 therefore score lower, and a file with only skeleton 0 is refused). The merge-tolerant
//! variant with threshold k ignores (skeleton, segment) pairs of at most k nodes when it
//! looks for mergers (k = ∞: no segment is a merger); as in BANIS an edge is then merged
//! when its segment merges and its skeleton is merged in some kept pair. Repeated edges
//! count once. Sums are f64;
//! funlib sums in f32, so its values differ from these in the 7th digit.

use std::collections::HashMap;

use serde::Serialize;

use crate::contingency::{Contingency, IdMap};
use crate::skeleton::Skeletons;
use crate::{MetricsError, Result};

/// Edge counts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EdgeStats {
    /// An end in segment 0.
    pub omitted: u64,
    /// Ends in different segments.
    pub split: u64,
    /// Both ends in a merging segment.
    pub merged: u64,
    /// Neither.
    pub correct: u64,
}

/// Every skeleton number of one prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErlReport {
    /// Expected run length (nm).
    pub erl: f64,
    /// ERL of a perfect prediction (nm).
    pub max_erl: f64,
    /// `erl / max_erl`.
    pub nerl: f64,
    /// Total skeleton edge length (nm).
    pub total_length: f64,
    /// (skeleton, segment) pairs in merging segments, segment 0 included (BANIS).
    pub n_mergers: u64,
    /// As `n_mergers`, without segment 0.
    pub n_non0_mergers: u64,
    /// Split edges.
    pub n_splits: u64,
    /// Edge counts.
    pub edges: EdgeStats,
    /// Ids of the merging segments, ascending.
    pub merging_segments: Vec<u64>,
    /// NERL with merge threshold k, for each requested k (`None`: ∞), in request order.
    pub adapted_nerl: Vec<(Option<u64>, f64)>,
    /// VOI over nodes: H(prediction | skeleton) (prediction 0 is an ordinary segment).
    pub node_voi_split: f64,
    /// H(skeleton | prediction) over nodes.
    pub node_voi_merge: f64,
    /// Nodes evaluated.
    pub nodes: u64,
    /// Nodes of skeleton 0, which is unlabelled (BANIS and funlib): their edges count in
    /// the total length but never as correct.
    pub unlabelled_nodes: u64,
}

/// Segments holding several skeletons, and the skeletons in them.
struct Mergers {
    by_segment: IdMap<u64, Vec<u64>>,
    skeletons: IdMap<u64, ()>,
}

/// Computes ERL, NERL, edge statistics, merge-tolerant NERL for each threshold in
/// `merge_thresholds` (`None` = ∞) and node VOI, from the prediction id of every node
/// (`pred[i]` for `skeletons.nodes[i]`, e.g. from [`Skeletons::lookup`]).
///
/// # Errors
/// [`MetricsError::InvalidParameter`] when `pred` does not have one id per node;
/// [`MetricsError::BadSkeleton`] when the skeletons have no edge length at all.
pub fn erl(
    skeletons: &Skeletons,
    pred: &[u64],
    merge_thresholds: &[Option<u64>],
) -> Result<ErlReport> {
    if pred.len() != skeletons.nodes.len() {
        return Err(MetricsError::InvalidParameter {
            name: "prediction ids",
            reason: format!("{} ids for {} nodes", pred.len(), skeletons.nodes.len()),
        });
    }
    let skel: Vec<u64> = skeletons.nodes.iter().map(|n| n.skeleton).collect();
    // Nodes per (skeleton, segment).
    let mut pair_nodes: IdMap<(u64, u64), u64> = IdMap::default();
    for (&s, &p) in skel.iter().zip(pred) {
        *pair_nodes.entry((s, p)).or_insert(0) += 1;
    }
    let lengths: Vec<f64> = skeletons
        .edges
        .iter()
        .map(|&(a, b)| {
            let (u, v) = (
                skeletons.nodes[a].position_nm,
                skeletons.nodes[b].position_nm,
            );
            ((u[0] - v[0]).powi(2) + (u[1] - v[1]).powi(2) + (u[2] - v[2]).powi(2)).sqrt()
        })
        .collect();
    let total_length: f64 = lengths.iter().sum();
    if !total_length.is_finite() {
        return Err(MetricsError::BadSkeleton {
            source_name: "skeletons".into(),
            reason: format!(
                "the edge lengths sum to {total_length} nm: node positions in nm are too large \
                 to measure (check position_nm and --voxel-size)"
            ),
        });
    }
    if total_length <= 0.0 {
        return Err(MetricsError::BadSkeleton {
            source_name: "skeletons".into(),
            reason: "no edge of positive length; ERL is undefined".into(),
        });
    }
    let mut per_skeleton: HashMap<u64, f64> = HashMap::new();
    for (&(a, _), &l) in skeletons.edges.iter().zip(&lengths) {
        *per_skeleton.entry(skel[a]).or_insert(0.0) += l;
    }
    // Skeleton 0 counts as unlabelled here (funlib): its length stays in the total.
    let max_erl = per_skeleton
        .iter()
        .filter(|(&s, _)| s != 0)
        .map(|(_, l)| l * l)
        .sum::<f64>()
        / total_length;
    if max_erl <= 0.0 {
        return Err(MetricsError::BadSkeleton {
            source_name: "skeletons".into(),
            reason: "every edge belongs to skeleton 0, which means unlabelled (as in BANIS and \
                     funlib.evaluate); number skeletons from 1"
                .into(),
        });
    }

    // Merging segments (holding two or more skeletons) and merged skeletons, from the
    // (skeleton, segment) pairs with more than k nodes (k = None: ∞, none kept).
    let mergers = |k: Option<u64>| -> Mergers {
        let mut by_segment: IdMap<u64, Vec<u64>> = IdMap::default();
        if let Some(k) = k {
            for (&(s, p), &n) in &pair_nodes {
                if n > k {
                    by_segment.entry(p).or_default().push(s);
                }
            }
        }
        by_segment.retain(|_, v| v.len() >= 2);
        let skeletons = by_segment.values().flatten().map(|&s| (s, ())).collect();
        Mergers {
            by_segment,
            skeletons,
        }
    };
    let run = |m: &Mergers| -> (f64, EdgeStats) {
        let mut correct: IdMap<(u64, u64), f64> = IdMap::default();
        let mut stats = EdgeStats::default();
        for (&(a, b), &l) in skeletons.edges.iter().zip(&lengths) {
            let (pa, pb) = (pred[a], pred[b]);
            if pa == 0 || pb == 0 {
                stats.omitted += 1;
            } else if pa != pb {
                stats.split += 1;
            } else if m.by_segment.contains_key(&pa) && m.skeletons.contains_key(&skel[a]) {
                // As BANIS: the skeleton is merged somewhere and this segment merges.
                stats.merged += 1;
            } else {
                stats.correct += 1;
                *correct.entry((skel[a], pa)).or_insert(0.0) += l;
            }
        }
        (
            // A fold from +0.0: f64's `sum` of nothing is −0.0, which printed as "-0.0".
            correct.values().fold(0.0, |acc, c| acc + c * c) / total_length,
            stats,
        )
    };
    let merging = mergers(Some(0));
    let (erl, edges) = run(&merging);
    let n_mergers = merging.by_segment.values().map(|v| v.len() as u64).sum();
    let n_non0_mergers = merging
        .by_segment
        .iter()
        .filter(|(&p, _)| p != 0)
        .map(|(_, v)| v.len() as u64)
        .sum();
    let mut merging_segments: Vec<u64> = merging.by_segment.keys().copied().collect();
    merging_segments.sort_unstable();
    let adapted_nerl = merge_thresholds
        .iter()
        .map(|&k| (k, run(&mergers(k)).0 / max_erl))
        .collect();
    // Node VOI with skeleton ids as ground truth (skeleton 0 unlabelled, as in funlib).
    let table = Contingency::from_slices(&skel, pred);
    let (node_voi_split, node_voi_merge) = match crate::VoxelMetrics::from_contingency(&table) {
        Ok(m) => (m.voi_split, m.voi_merge),
        Err(_) => (0.0, 0.0),
    };
    Ok(ErlReport {
        erl,
        max_erl,
        nerl: erl / max_erl,
        total_length,
        n_mergers,
        n_non0_mergers,
        n_splits: edges.split,
        edges,
        merging_segments,
        adapted_nerl,
        node_voi_split,
        node_voi_merge,
        nodes: pred.len() as u64,
        unlabelled_nodes: skel.iter().filter(|&&s| s == 0).count() as u64,
    })
}
