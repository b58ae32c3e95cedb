//! waterz's iterative region merging: the cheapest edge first, strictly below each
//! threshold, stale edges rescored and pushed back, the survivor always the edge's `u`
//! (the smaller id). The queue reproduces libstdc++'s binary heap, so ties between equal
//! scores break exactly as in waterz.

use std::collections::VecDeque;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::scoring::Scoring;
use super::stats::{discretize, EdgeStats};

/// The merge queue: a binary heap with libstdc++'s sift order, or waterz's bin queue.
#[derive(Debug)]
pub(crate) enum Queue {
    Heap(Vec<(u32, f32)>),
    Bins {
        bins: Vec<VecDeque<u32>>,
        min_bin: Option<usize>,
    },
}

impl Queue {
    pub(crate) fn new(discretize_queue: usize) -> Self {
        if discretize_queue == 0 {
            Queue::Heap(Vec::new())
        } else {
            Queue::Bins {
                bins: vec![VecDeque::new(); discretize_queue],
                min_bin: None,
            }
        }
    }

    fn push(&mut self, e: u32, score: f32) {
        match self {
            Queue::Heap(heap) => {
                heap.push((e, score));
                let last = heap.len() - 1;
                sift_up(heap, last, 0, (e, score));
            }
            Queue::Bins { bins, min_bin } => {
                let i = discretize(score, bins.len() as u32) as usize;
                bins[i].push_back(e);
                *min_bin = Some(min_bin.map_or(i, |m| m.min(i)));
            }
        }
    }

    fn top(&self) -> Option<u32> {
        match self {
            Queue::Heap(heap) => heap.first().map(|t| t.0),
            Queue::Bins { bins, min_bin } => min_bin.map(|m| bins[m][0]),
        }
    }

    fn pop(&mut self) {
        match self {
            Queue::Heap(heap) => {
                // std::pop_heap: the last element fills the hole left by the top.
                let len = heap.len();
                if len > 1 {
                    let value = heap[len - 1];
                    heap[len - 1] = heap[0];
                    adjust_heap(&mut heap[..len - 1], value);
                }
                heap.pop();
            }
            Queue::Bins { bins, min_bin } => {
                let Some(m) = *min_bin else { return };
                bins[m].pop_front();
                if bins[m].is_empty() {
                    *min_bin = (m..bins.len()).find(|&i| !bins[i].is_empty());
                }
            }
        }
    }
}

/// libstdc++'s `__push_heap` for a min-heap (`std::greater`): move the hole up while the
/// parent is strictly greater.
fn sift_up(heap: &mut [(u32, f32)], mut hole: usize, top: usize, value: (u32, f32)) {
    while hole > top {
        let parent = (hole - 1) / 2;
        // Only a strictly greater parent moves (scores are never NaN here).
        if heap[parent].1 <= value.1 {
            break;
        }
        heap[hole] = heap[parent];
        hole = parent;
    }
    heap[hole] = value;
}

/// libstdc++'s `__adjust_heap` from the root: walk the hole down to a leaf along the
/// smaller child (the right one unless it is strictly greater), then sift `value` up.
fn adjust_heap(heap: &mut [(u32, f32)], value: (u32, f32)) {
    let len = heap.len();
    let mut hole = 0;
    let mut child = 0;
    while len >= 2 && child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if heap[child].1 > heap[child - 1].1 {
            child -= 1;
        }
        heap[hole] = heap[child];
        hole = child;
    }
    if len.is_multiple_of(2) && len >= 2 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        heap[hole] = heap[child - 1];
        hole = child - 1;
    }
    sift_up(heap, hole, 0, value);
}

/// Hashes the `u64` pair keys with splitmix64's finaliser: FxHash leaves the low bits of
/// such keys (which pick the bucket) depending on `v`'s low bits only, and probe chains
/// grow long.
#[derive(Default)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A hash map keyed by edge keys.
pub(crate) type PairMap<V> = HashMap<u64, V, BuildHasherDefault<PairHasher>>;

fn key(u: u32, v: u32) -> u64 {
    (u64::from(u.min(v)) << 32) | u64::from(u.max(v))
}

/// One merge: `b` joined `a` (`c == a`, the smaller id) at `score`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Merge {
    /// The surviving region.
    pub a: u64,
    /// The region merged into `a`.
    pub b: u64,
    /// The result (always `a`, as in waterz).
    pub c: u64,
    /// The edge's score when it was merged.
    pub score: f32,
}

/// An edge of the region graph between regions `u < v`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoredEdge {
    /// The smaller region id.
    pub u: u64,
    /// The larger region id.
    pub v: u64,
    /// The edge's current score.
    pub score: f32,
}

/// The region graph being merged (dense node ids; the caller maps them back).
///
/// waterz moves every edge of the region merged away onto the survivor, searching the
/// survivor's edges for each; a region that grows by absorbing larger-id regions pays its
/// whole degree again at each merge. Here a region's edges hang off a *handle*: merging
/// walks the shorter of the two edge lists and the longer one's handle carries on under the
/// survivor's id, so each merge costs the smaller degree, and edges are found by a hash of
/// their two handles. What waterz computes is unchanged: which edges are merged into which,
/// their statistics, the stale marks and the queue — so the same scores, the same merges
/// in the same order. Even the edge a merge went through stays attached to the survivor
/// and to the (now empty) region merged away, as in waterz.
#[derive(Debug)]
pub(crate) struct Merging {
    pub(crate) stats: EdgeStats,
    /// Each handle's parent (a handle whose region merged into another points on).
    hparent: Vec<u32>,
    /// The region id of each root handle.
    hid: Vec<u32>,
    /// Handles of regions merged away, kept for the edge their merge went through.
    dead: Vec<bool>,
    /// The edges of each root handle (deleted ones are skipped when read).
    inc: Vec<Vec<u32>>,
    /// The handles at the two ends of each edge.
    eh: Vec<[u32; 2]>,
    /// The edge between two root handles, by `key` (see `live_pair`).
    pairs: PairMap<u32>,
    scores: Vec<f32>,
    stale: Vec<bool>,
    deleted: Vec<bool>,
    /// waterz's merge tree over region ids (for relabelling).
    parent: Vec<u32>,
    merged_until: f32,
    queue: Queue,
    scored: bool,
    /// Whether scores read region sizes (then they need each edge's current ends).
    sizes: bool,
}

impl Merging {
    /// A merging over `nodes` regions and the edges in `stats` (sorted by `(u, v)`).
    pub(crate) fn new(stats: EdgeStats, nodes: usize, discretize_queue: usize) -> Self {
        let edges = stats.ends.len();
        let mut inc: Vec<Vec<u32>> = vec![Vec::new(); nodes];
        let mut pairs = PairMap::with_capacity_and_hasher(edges, Default::default());
        let mut eh = Vec::with_capacity(edges);
        for (e, &(u, v)) in stats.ends.iter().enumerate() {
            inc[u as usize].push(e as u32);
            inc[v as usize].push(e as u32);
            pairs.insert(key(u, v), e as u32);
            eh.push([u, v]);
        }
        let has_sizes = stats.has_sizes();
        Merging {
            stats,
            hparent: (0..nodes as u32).collect(),
            hid: (0..nodes as u32).collect(),
            dead: vec![false; nodes],
            inc,
            eh,
            pairs,
            scores: vec![0.0; edges],
            stale: vec![false; edges],
            deleted: vec![false; edges],
            parent: (0..nodes as u32).collect(),
            merged_until: f32::MIN,
            queue: Queue::new(discretize_queue),
            scored: false,
            sizes: has_sizes,
        }
    }

    fn find(&mut self, mut h: u32) -> u32 {
        while self.hparent[h as usize] != h {
            let g = self.hparent[self.hparent[h as usize] as usize];
            self.hparent[h as usize] = g;
            h = g;
        }
        h
    }

    /// The root handles of edge `e`'s ends.
    fn end_handles(&mut self, e: usize) -> [u32; 2] {
        let [h1, h2] = self.eh[e];
        [self.find(h1), self.find(h2)]
    }

    /// Edge `e`'s regions now, smaller id first (waterz keeps them sorted).
    fn ends(&mut self, e: usize) -> (u32, u32) {
        let [r1, r2] = self.end_handles(e);
        let (a, b) = (self.hid[r1 as usize], self.hid[r2 as usize]);
        (a.min(b), a.max(b))
    }

    /// Scores every edge in id order (what waterz does before its first merge).
    pub(crate) fn score_all(&mut self, scoring: &Scoring) {
        if !self.scored {
            for e in 0..self.scores.len() {
                self.score_edge(e, scoring);
            }
            self.scored = true;
        }
    }

    /// The initial scores (after `score_all`).
    pub(crate) fn scores(&self) -> &[f32] {
        &self.scores
    }

    fn score_edge(&mut self, e: usize, scoring: &Scoring) -> f32 {
        if self.sizes {
            // Size-based scores read the edge's current ends.
            self.stats.ends[e] = self.ends(e);
        }
        let score = scoring.score(&self.stats, e);
        self.scores[e] = score;
        self.queue.push(e as u32, score);
        score
    }

    /// Merges every edge scored strictly below `threshold`; returns how many merged.
    /// A threshold at or below an earlier one merges nothing.
    pub(crate) fn merge_until(
        &mut self,
        threshold: f32,
        scoring: &Scoring,
        history: &mut Vec<(u32, u32, f32)>,
    ) -> usize {
        if threshold <= self.merged_until {
            return 0;
        }
        self.score_all(scoring);
        let mut merged = 0;
        while let Some(next) = self.queue.top() {
            let next = next as usize;
            // The edge's current score, which may be newer than its queue entry.
            let score = self.scores[next];
            if score >= threshold {
                break;
            }
            self.queue.pop();
            if self.deleted[next] {
                continue;
            }
            if self.stale[next] {
                self.score_edge(next, scoring);
                self.stale[next] = false;
                continue;
            }
            let (u, v) = self.merge_regions(next);
            merged += 1;
            history.push((u, v, score));
        }
        self.merged_until = threshold;
        merged
    }

    /// Merges the regions of edge `e`, the larger id into the smaller; returns them.
    fn merge_regions(&mut self, e: usize) -> (u32, u32) {
        let [r1, r2] = self.end_handles(e);
        let (ha, hb) = if self.hid[r1 as usize] < self.hid[r2 as usize] {
            (r1, r2)
        } else {
            (r2, r1)
        };
        let (a, b) = (self.hid[ha as usize], self.hid[hb as usize]);
        let node_changed = self.stats.merge_nodes(b as usize, a as usize);
        self.parent[b as usize] = a;
        // The region merged away keeps only `e`, under a handle of its own.
        let hd = self.hparent.len() as u32;
        self.hparent.push(hd);
        self.hid.push(b);
        self.dead.push(true);
        self.inc.push(vec![e as u32]);
        let end = usize::from(self.find(self.eh[e][0]) != hb);
        self.eh[e][end] = hd;
        let (la, lb) = (self.inc[ha as usize].len(), self.inc[hb as usize].len());
        let root = if lb <= la {
            self.absorb_b(e, ha, hb, node_changed)
        } else {
            self.absorb_a(e, ha, hb, node_changed)
        };
        self.hid[root as usize] = a;
        if node_changed {
            for &x in &self.inc[root as usize] {
                self.stale[x as usize] = true;
            }
        }
        (a, b)
    }

    /// The edge between root handles `h` and `n`, if any. Entries are never removed: an
    /// edge that moves or is deleted leaves its old key behind, but that key always names
    /// a handle that is no longer a root (or was overwritten by the edge that took its
    /// place), and look-ups only name roots.
    fn live_pair(&self, h: u32, n: u32) -> Option<usize> {
        let x = *self.pairs.get(&key(h, n))? as usize;
        debug_assert!(!self.deleted[x]);
        Some(x)
    }

    /// The other end of edge `x` (a root handle), seen from root handle `h`.
    fn other(&mut self, x: usize, h: u32) -> u32 {
        let [r1, r2] = self.end_handles(x);
        if r1 == h {
            r2
        } else {
            r1
        }
    }

    /// b's edges are fewer: each moves to a or merges into a's edge to the same region.
    fn absorb_b(&mut self, e: usize, ha: u32, hb: u32, node_changed: bool) -> u32 {
        let lb = std::mem::take(&mut self.inc[hb as usize]);
        for ne in lb {
            let ne = ne as usize;
            if ne == e || self.deleted[ne] {
                continue;
            }
            let n = self.other(ne, hb);
            if self.dead[n as usize] {
                self.inc[ha as usize].push(ne as u32);
                if node_changed {
                    self.stale[ne] = true;
                }
                continue;
            }
            match self.live_pair(ha, n) {
                None => {
                    self.pairs.insert(key(ha, n), ne as u32);
                    self.inc[ha as usize].push(ne as u32);
                    if node_changed {
                        self.stale[ne] = true;
                    }
                }
                Some(ae) => self.merge_parallel(ae, ne, ha, n, true, node_changed),
            }
        }
        self.hparent[hb as usize] = ha;
        ha
    }

    /// a's edges are fewer: b's handle carries on as a's; a's edges join it, merging into
    /// b's edge to the same region where there is one.
    fn absorb_a(&mut self, e: usize, ha: u32, hb: u32, node_changed: bool) -> u32 {
        let la = std::mem::take(&mut self.inc[ha as usize]);
        for ae in la {
            let ae = ae as usize;
            if ae == e || self.deleted[ae] {
                continue;
            }
            let n = self.other(ae, ha);
            if self.dead[n as usize] {
                self.inc[hb as usize].push(ae as u32);
                continue;
            }
            match self.live_pair(hb, n) {
                None => {
                    self.pairs.insert(key(hb, n), ae as u32);
                    self.inc[hb as usize].push(ae as u32);
                }
                Some(ne) => self.merge_parallel(ae, ne, hb, n, false, node_changed),
            }
        }
        // `e` stays in b's list, which is now the survivor's, as it stayed in a's.
        self.hparent[ha as usize] = hb;
        hb
    }

    /// a's edge `ae` and b's edge `ne` lead to the same region `n`: the more expensive
    /// merges into the cheaper (b's when they tie), which is kept and may turn stale.
    /// `root` is the surviving handle; `kept_in_root` says whose edge is already in its
    /// list (a's when b was absorbed).
    fn merge_parallel(
        &mut self,
        ae: usize,
        ne: usize,
        root: u32,
        n: u32,
        a_in_root: bool,
        node_changed: bool,
    ) {
        let k = key(root, n);
        if self.scores[ne] > self.scores[ae] {
            let changed = self.stats.merge_edges(ne, ae);
            self.deleted[ne] = true;
            if changed {
                self.stale[ae] = true;
            }
            self.pairs.insert(k, ae as u32);
            if !a_in_root {
                self.inc[root as usize].push(ae as u32);
            }
        } else {
            let changed = self.stats.merge_edges(ae, ne);
            self.deleted[ae] = true;
            if changed || node_changed {
                self.stale[ne] = true;
            }
            self.pairs.insert(k, ne as u32);
            if a_in_root {
                self.inc[root as usize].push(ne as u32);
            }
        }
    }

    /// The region `n` belongs to now.
    pub(crate) fn root(&mut self, n: u32) -> u32 {
        let mut root = n;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        let mut id = n;
        while id != root {
            let next = self.parent[id as usize];
            self.parent[id as usize] = root;
            id = next;
        }
        root
    }

    /// The region graph now, as waterz extracts it: edges not deleted, in id order, with
    /// their current score (stale ones rescored — which, as in waterz, also queues them
    /// again and so can change later merges), those below the last threshold left out.
    pub(crate) fn region_graph(&mut self, scoring: &Scoring) -> Vec<(u32, u32, f32)> {
        self.score_all(scoring);
        let mut out = Vec::new();
        for e in 0..self.scores.len() {
            if self.deleted[e] {
                continue;
            }
            let score = if self.stale[e] {
                self.score_edge(e, scoring)
            } else {
                self.scores[e]
            };
            if score < self.merged_until {
                continue;
            }
            let (u, v) = self.ends(e);
            out.push((u, v, score));
        }
        out
    }
}
