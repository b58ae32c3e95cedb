//! waterz's iterative region merging: the cheapest edge first, strictly below each
//! threshold, stale edges rescored and pushed back, the survivor always the edge's `u`
//! (the smaller id). The queue reproduces libstdc++'s binary heap, so ties between equal
//! scores break exactly as in waterz.

use std::collections::VecDeque;

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
        if !(heap[parent].1 > value.1) {
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
    if len % 2 == 0 && len >= 2 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        heap[hole] = heap[child - 1];
        hole = child - 1;
    }
    sift_up(heap, hole, 0, value);
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

/// The region graph being merged (dense node ids; `ids` maps them back).
#[derive(Debug)]
pub(crate) struct Merging {
    pub(crate) stats: EdgeStats,
    inc: Vec<Vec<u32>>,
    scores: Vec<f32>,
    stale: Vec<bool>,
    deleted: Vec<bool>,
    parent: Vec<u32>,
    merged_until: f32,
    queue: Queue,
    scored: bool,
}

impl Merging {
    /// A merging over `nodes` regions and the edges in `stats` (sorted by `(u, v)`).
    pub(crate) fn new(stats: EdgeStats, nodes: usize, discretize_queue: usize) -> Self {
        let edges = stats.ends.len();
        let mut inc = vec![Vec::new(); nodes];
        for (e, &(u, v)) in stats.ends.iter().enumerate() {
            inc[u as usize].push(e as u32);
            inc[v as usize].push(e as u32);
        }
        Merging {
            stats,
            inc,
            scores: vec![0.0; edges],
            stale: vec![false; edges],
            deleted: vec![false; edges],
            parent: (0..nodes as u32).collect(),
            merged_until: f32::MIN,
            queue: Queue::new(discretize_queue),
            scored: false,
        }
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
            let (u, v) = self.stats.ends[next];
            self.merge_regions(next);
            merged += 1;
            history.push((u, v, score));
        }
        self.merged_until = threshold;
        merged
    }

    fn merge_regions(&mut self, e: usize) {
        let (a, b) = self.stats.ends[e];
        let node_changed = self.stats.merge_nodes(b as usize, a as usize);
        self.parent[b as usize] = a;
        if node_changed {
            for &n in &self.inc[a as usize] {
                self.stale[n as usize] = true;
            }
        }
        let taken = std::mem::replace(&mut self.inc[b as usize], vec![e as u32]);
        for ne in taken {
            let ne = ne as usize;
            if ne == e {
                continue;
            }
            let (nu, nv) = self.stats.ends[ne];
            let neighbour = if nu == b { nv } else { nu };
            match self.find_edge(a, neighbour) {
                None => {
                    self.move_edge(ne, a, neighbour);
                    if node_changed {
                        self.stale[ne] = true;
                    }
                }
                Some(ae) if self.scores[ne] > self.scores[ae] => {
                    let changed = self.stats.merge_edges(ne, ae);
                    self.remove_edge(ne);
                    self.deleted[ne] = true;
                    if changed {
                        self.stale[ae] = true;
                    }
                }
                Some(ae) => {
                    let changed = self.stats.merge_edges(ae, ne);
                    self.remove_edge(ae);
                    self.move_edge(ne, a, neighbour);
                    if changed || node_changed {
                        self.stale[ne] = true;
                    }
                    self.deleted[ae] = true;
                }
            }
        }
    }

    fn find_edge(&self, u: u32, v: u32) -> Option<usize> {
        let (iu, iv) = (&self.inc[u as usize], &self.inc[v as usize]);
        let pool = if iu.len() < iv.len() { iu } else { iv };
        let key = (u.min(v), u.max(v));
        pool.iter().map(|&e| e as usize).find(|&e| {
            let (a, b) = self.stats.ends[e];
            (a.min(b), a.max(b)) == key
        })
    }

    fn remove_inc(&mut self, n: u32, e: usize) {
        let list = &mut self.inc[n as usize];
        if let Some(i) = list.iter().position(|&x| x as usize == e) {
            list.swap_remove(i);
        }
    }

    fn remove_edge(&mut self, e: usize) {
        let (u, v) = self.stats.ends[e];
        self.remove_inc(u, e);
        self.remove_inc(v, e);
    }

    /// Re-attaches edge `e` to `u` and `v`, updating the incidence lists as waterz does.
    fn move_edge(&mut self, e: usize, u: u32, v: u32) {
        let (pu, pv) = self.stats.ends[e];
        if pu == u {
            self.move_end(e, false, v);
        } else if pu == v {
            self.move_end(e, false, u);
        } else if pv == v {
            self.move_end(e, true, u);
        } else if pv == u {
            self.move_end(e, true, v);
        } else {
            self.move_end(e, true, u);
            self.move_end(e, false, v);
        }
        let (a, b) = self.stats.ends[e];
        if a > b {
            self.stats.ends[e] = (b, a);
        }
    }

    fn move_end(&mut self, e: usize, first: bool, to: u32) {
        let (u, v) = self.stats.ends[e];
        let old = if first { u } else { v };
        self.remove_inc(old, e);
        self.inc[to as usize].push(e as u32);
        self.stats.ends[e] = if first { (to, v) } else { (u, to) };
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
            let (u, v) = self.stats.ends[e];
            out.push((u, v, score));
        }
        out
    }
}
