//! The edge and region statistics behind waterz's scores, kept with waterz's arithmetic:
//! `float` running means, histograms of `floor(a·bins)`, exact quantiles, the top K values.

use super::scoring::{Num32, Provider, Stats};

/// waterz's `discretize<int>(value, levels)`: NaN and values ≤ 0 go to the first level,
/// values ≥ 1 to the last.
pub(crate) fn discretize(value: f32, levels: u32) -> u32 {
    if value.is_nan() || value <= 0.0 {
        return 0;
    }
    if value >= 1.0 {
        return levels - 1;
    }
    ((value * levels as f32) as u32).min(levels - 1)
}

/// A histogram, sparse: (bin, count) sorted by bin.
#[derive(Clone, Debug, Default)]
struct Histogram {
    bins: Vec<(u32, u32)>,
    sum: u64,
}

impl Histogram {
    fn lowest(&self) -> Option<u32> {
        self.bins.first().map(|b| b.0)
    }
    fn inc(&mut self, bin: u32) {
        match self.bins.binary_search_by_key(&bin, |b| b.0) {
            Ok(i) => self.bins[i].1 += 1,
            Err(i) => self.bins.insert(i, (bin, 1)),
        }
        self.sum += 1;
    }
    fn add(&mut self, other: &Histogram) {
        let mut out = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut i, mut j) = (0, 0);
        while i < self.bins.len() || j < other.bins.len() {
            let a = self.bins.get(i).copied();
            let b = other.bins.get(j).copied();
            match (a, b) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    out.push((x.0, x.1 + y.1));
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    out.push(x);
                    i += 1;
                }
                (Some(x), None) => {
                    out.push(x);
                    i += 1;
                }
                (_, Some(y)) => {
                    out.push(y);
                    j += 1;
                }
                (None, None) => unreachable!(),
            }
        }
        self.bins = out;
        self.sum += other.sum;
    }
    /// waterz's pivot search: the first bin whose cumulative count reaches
    /// `q·sum/100 + 1`, as the bin's centre (past the last bin when none does).
    fn quantile(&self, q: u32, levels: u32) -> f32 {
        let pivot = u64::from(q) * self.sum / 100 + 1;
        let mut cumulative = 0;
        let mut bin = levels;
        for &(b, c) in &self.bins {
            cumulative += u64::from(c);
            if cumulative >= pivot {
                bin = b;
                break;
            }
        }
        ((f64::from(bin as f32) + 0.5) / f64::from(levels)) as f32
    }
}

/// One provider's data.
#[derive(Clone, Debug)]
enum Store {
    Mean {
        n: Vec<u64>,
        mean: Vec<f32>,
    },
    Min(Vec<f32>),
    Max(Vec<f32>),
    Contact(Vec<u64>),
    Size(Vec<u64>),
    Histogram {
        q: u32,
        bins: u32,
        init_max: bool,
        h: Vec<Histogram>,
    },
    Quantile {
        q: u32,
        init_max: bool,
        v: Vec<Vec<f32>>,
        selected: Vec<bool>,
    },
    MaxK {
        k: usize,
        v: Vec<f32>,
    },
    Constant,
}

/// The index waterz reads a quantile at: `q·size/100`, the last element for q = 100.
fn quantile_index(q: u32, len: usize) -> usize {
    let i = q as usize * len / 100;
    if i == len {
        i - 1
    } else {
        i
    }
}

/// The statistics of every edge and region.
#[derive(Clone, Debug)]
pub(crate) struct EdgeStats {
    stores: Vec<Store>,
    /// Edge ends (set by the merging, read by size-based scores).
    pub(crate) ends: Vec<(u32, u32)>,
}

impl EdgeStats {
    /// Empty statistics for `providers` over `nodes` regions.
    pub(crate) fn new(providers: &[Provider], nodes: usize) -> Self {
        let stores = providers
            .iter()
            .map(|p| match *p {
                Provider::Mean => Store::Mean {
                    n: Vec::new(),
                    mean: Vec::new(),
                },
                Provider::Min => Store::Min(Vec::new()),
                Provider::Max => Store::Max(Vec::new()),
                Provider::Contact => Store::Contact(Vec::new()),
                Provider::Size => Store::Size(vec![0; nodes]),
                Provider::Histogram { q, bins, init_max } => Store::Histogram {
                    q,
                    bins,
                    init_max,
                    h: Vec::new(),
                },
                Provider::Quantile { q, init_max } => Store::Quantile {
                    q,
                    init_max,
                    v: Vec::new(),
                    selected: Vec::new(),
                },
                Provider::MaxK { k } => Store::MaxK {
                    k: k as usize,
                    v: Vec::new(),
                },
                Provider::Constant(_) => Store::Constant,
            })
            .collect();
        EdgeStats {
            stores,
            ends: Vec::new(),
        }
    }

    /// Whether region sizes are kept (size-based scores).
    pub(crate) fn has_sizes(&self) -> bool {
        self.stores.iter().any(|s| matches!(s, Store::Size(_)))
    }

    /// A new edge with no affinities yet.
    pub(crate) fn new_edge(&mut self, u: u32, v: u32) -> usize {
        for s in &mut self.stores {
            match s {
                Store::Mean { n, mean } => {
                    n.push(0);
                    mean.push(0.0);
                }
                Store::Min(m) => m.push(f32::MAX),
                Store::Max(m) => m.push(0.0),
                Store::Contact(c) => c.push(0),
                Store::Histogram { h, .. } => h.push(Histogram::default()),
                Store::Quantile { v, selected, .. } => {
                    v.push(Vec::new());
                    selected.push(false);
                }
                Store::MaxK { k, v } => v.extend(std::iter::repeat_n(f32::MIN, *k)),
                Store::Size(_) | Store::Constant => {}
            }
        }
        self.ends.push((u, v));
        self.ends.len() - 1
    }

    /// One voxel of region `n`.
    pub(crate) fn add_voxel(&mut self, n: usize) {
        self.add_voxels(n, 1);
    }

    /// `count` voxels of region `n`.
    pub(crate) fn add_voxels(&mut self, n: usize, count: u64) {
        for s in &mut self.stores {
            if let Store::Size(sizes) = s {
                sizes[n] += count;
            }
        }
    }

    /// One boundary affinity of edge `e`, in waterz's order (raster order, then z, y, x).
    pub(crate) fn add_affinity(&mut self, e: usize, a: f32) {
        for s in &mut self.stores {
            match s {
                Store::Mean { n, mean } => {
                    let count = n[e];
                    mean[e] = (a + mean[e] * count as f32) / (count + 1) as f32;
                    n[e] += 1;
                }
                Store::Min(m) => m[e] = m[e].min(a),
                Store::Max(m) => m[e] = if m[e] < a { a } else { m[e] },
                Store::Contact(c) => c[e] += 1,
                Store::Histogram {
                    bins, init_max, h, ..
                } => {
                    let bin = discretize(a, *bins);
                    let hist = &mut h[e];
                    if *init_max {
                        if let Some(lowest) = hist.lowest() {
                            if bin > lowest {
                                *hist = Histogram::default();
                            } else {
                                continue;
                            }
                        }
                    }
                    hist.inc(bin);
                }
                Store::Quantile { init_max, v, .. } => {
                    let values = &mut v[e];
                    if *init_max && values.len() == 1 {
                        if values[0] < a {
                            values[0] = a;
                        }
                        continue;
                    }
                    values.push(a);
                }
                Store::MaxK { k, v } => push_max_k(&mut v[e * *k..(e + 1) * *k], a),
                Store::Size(_) | Store::Constant => {}
            }
        }
    }

    /// Reorders the edges: new edge `i` is old edge `order[i]`.
    pub(crate) fn permute(&mut self, order: &[u32]) {
        fn take<T: Clone>(v: &[T], order: &[u32]) -> Vec<T> {
            order.iter().map(|&i| v[i as usize].clone()).collect()
        }
        for s in &mut self.stores {
            match s {
                Store::Mean { n, mean } => {
                    *n = take(n, order);
                    *mean = take(mean, order);
                }
                Store::Min(m) | Store::Max(m) => *m = take(m, order),
                Store::Contact(c) => *c = take(c, order),
                Store::Histogram { h, .. } => {
                    let mut old = std::mem::take(h);
                    *h = order
                        .iter()
                        .map(|&i| std::mem::take(&mut old[i as usize]))
                        .collect();
                }
                Store::Quantile { v, selected, .. } => {
                    let mut old = std::mem::take(v);
                    *v = order
                        .iter()
                        .map(|&i| std::mem::take(&mut old[i as usize]))
                        .collect();
                    *selected = take(selected, order);
                }
                Store::MaxK { k, v } => {
                    let k = *k;
                    let mut out = Vec::with_capacity(v.len());
                    for &i in order {
                        out.extend_from_slice(&v[i as usize * k..(i as usize + 1) * k]);
                    }
                    *v = out;
                }
                Store::Size(_) | Store::Constant => {}
            }
        }
        self.ends = take(&self.ends, order);
    }

    /// Region `from` joins region `to`; true when a statistic changed. As in waterz,
    /// providers are told in order and the first that reports a change ends the round.
    pub(crate) fn merge_nodes(&mut self, from: usize, to: usize) -> bool {
        for s in &mut self.stores {
            if let Store::Size(sizes) = s {
                sizes[to] += sizes[from];
                sizes[from] = 0;
                return true;
            }
        }
        false
    }

    /// Edge `from`'s statistics join edge `to`'s; true when a statistic changed. The first
    /// provider that reports a change ends the round (waterz's `||` chain), so the ones
    /// after it are not updated.
    pub(crate) fn merge_edges(&mut self, from: usize, to: usize) -> bool {
        for s in &mut self.stores {
            let changed = match s {
                Store::Mean { n, mean } => {
                    let (fa, ta) = (n[from], n[to]);
                    mean[to] = (mean[from] * fa as f32 + mean[to] * ta as f32) / (fa + ta) as f32;
                    n[to] = fa + ta;
                    true
                }
                Store::Min(m) => {
                    if m[to] <= m[from] {
                        false
                    } else {
                        m[to] = m[from];
                        true
                    }
                }
                Store::Max(m) => {
                    if m[to] >= m[from] {
                        false
                    } else {
                        m[to] = m[from];
                        true
                    }
                }
                Store::Contact(c) => {
                    c[to] += c[from];
                    true
                }
                Store::Histogram { h, .. } => {
                    let other = std::mem::take(&mut h[from]);
                    h[to].add(&other);
                    true
                }
                Store::Quantile { q, v, selected, .. } => {
                    let other = std::mem::take(&mut v[from]);
                    let values = &mut v[to];
                    values.extend_from_slice(&other);
                    let i = quantile_index(*q, values.len());
                    values.select_nth_unstable_by(i, f32::total_cmp);
                    selected[to] = true;
                    true
                }
                Store::MaxK { k, v } => {
                    let k = *k;
                    let other: Vec<f32> = v[from * k..(from + 1) * k].to_vec();
                    merge_max_k(&mut v[to * k..(to + 1) * k], &other);
                    true
                }
                Store::Size(_) | Store::Constant => false,
            };
            if changed {
                return true;
            }
        }
        false
    }
}

impl Stats for EdgeStats {
    fn edge_value(&self, p: usize, e: usize) -> Num32 {
        match &self.stores[p] {
            Store::Mean { mean, .. } => Num32::Float(mean[e]),
            Store::Min(m) | Store::Max(m) => Num32::Float(m[e]),
            Store::Contact(c) => Num32::Count(c[e]),
            Store::Histogram { q, bins, h, .. } => Num32::Float(h[e].quantile(*q, *bins)),
            Store::Quantile { q, v, .. } => {
                // Before any merge waterz reads the element at the quantile's index in the
                // order the affinities came (it only partitions the values when merging).
                let values = &v[e];
                Num32::Float(values[quantile_index(*q, values.len())])
            }
            Store::MaxK { k, v } => {
                let values = &v[e * k..(e + 1) * k];
                let mut sum = 0.0f32;
                let mut n = 0;
                for &x in values {
                    if x == f32::MIN {
                        break;
                    }
                    sum += x;
                    n += 1;
                }
                Num32::Float(if n == 0 { f32::NAN } else { sum / n as f32 })
            }
            Store::Size(_) | Store::Constant => unreachable!("not an edge statistic"),
        }
    }
    fn size(&self, p: usize, n: usize) -> u64 {
        match &self.stores[p] {
            Store::Size(s) => s[n],
            _ => unreachable!("not a size provider"),
        }
    }
    fn ends(&self, e: usize) -> (usize, usize) {
        let (u, v) = self.ends[e];
        (u as usize, v as usize)
    }
}

/// waterz's `MaxKValues::push`: keep the K largest, largest first; `f32::MIN` marks empty.
fn push_max_k(values: &mut [f32], a: f32) {
    let k = values.len();
    for i in 0..k {
        if values[i] == f32::MIN {
            values[i] = a;
            return;
        }
        if values[i] < a {
            values.copy_within(i..k - 1, i + 1);
            values[i] = a;
            return;
        }
    }
}

/// waterz's `MaxKValues::merge`.
fn merge_max_k(values: &mut [f32], other: &[f32]) {
    let a: Vec<f32> = values.to_vec();
    let (mut i, mut j) = (0, 0);
    for slot in values.iter_mut() {
        if a[i] > other[j] {
            *slot = a[i];
            i += 1;
        } else {
            *slot = other[j];
            j += 1;
        }
    }
}
