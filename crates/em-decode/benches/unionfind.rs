//! The decoders whose cost is dominated by union-find, through their public entry points,
//! so that the same bench times any union-find implementation behind them:
//!
//! - `affinity_cc` on short-range channels (the raster-scan fast path: an equivalence table
//!   over provisional labels, and a join of the slab tables with 2 threads);
//! - `affinity_cc` on BANIS's six channels, short and long range (a union-find over all
//!   voxels held in the output buffer);
//! - `decode_blockwise` with small blocks (the global table over block-local labels);
//! - the operations alone (`uf_ops`): [`em_core::UnionFind`] against the hand-written
//!   union-finds it replaced (copied below), on the same raster-order joins.
//!
//! Each on random affinities (uniform in 0..1, threshold 0.5: close to the percolation
//! threshold, so trees are deep and unions frequent) and on wavy cells (few large
//! components, the usual case).
//!
//! `cargo bench -p em-decode --bench unionfind`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use em_core::{AnyArray, InMemoryVolume, NoProgress, UnionFind};
use em_decode::{affinity_cc, decode_blockwise, CcOptions, DecodeOptions};
use ndarray::Array4;

mod common;

use common::cell_affinities;

/// A deterministic hash of `i` mapped to 0..1.
fn unit(i: usize) -> f32 {
    let h = (i as u64 ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    (h % 1_000_000) as f32 / 1_000_000.0
}

/// Uniform random affinities, `channels` channels of `n`³.
fn random_affinities(channels: usize, n: usize) -> Array4<f32> {
    Array4::from_shape_fn((channels, n, n, n), |(c, z, y, x)| {
        unit(((c * n + z) * n + y) * n + x)
    })
}

fn options(channels: usize, threads: usize) -> CcOptions {
    CcOptions {
        channels: (0..channels).collect(),
        threads: Some(threads),
        ..CcOptions::default()
    }
}

/// The raster-scan fast path (three unit channels).
fn bench_short_range(c: &mut Criterion) {
    let mut g = c.benchmark_group("uf_short_range");
    g.sample_size(10);
    let n = 96usize;
    g.throughput(Throughput::Elements((n * n * n) as u64));
    for (name, aff) in [
        ("random", random_affinities(3, n)),
        ("cells", cell_affinities(3, n)),
    ] {
        for threads in [1, 2] {
            let params = options(3, threads);
            g.bench_function(format!("{name}_{n}^3_{threads}_threads"), |b| {
                b.iter(|| affinity_cc::<f32, u32>(aff.view(), &params).unwrap())
            });
        }
    }
    g.finish();
}

/// The voxel forest (BANIS's six channels, long range included).
fn bench_long_range(c: &mut Criterion) {
    let mut g = c.benchmark_group("uf_long_range");
    g.sample_size(10);
    let n = 64usize;
    g.throughput(Throughput::Elements((n * n * n) as u64));
    for (name, aff) in [
        ("random", random_affinities(6, n)),
        ("cells", cell_affinities(6, n)),
    ] {
        for threads in [1, 2] {
            let params = options(6, threads);
            g.bench_function(format!("{name}_{n}^3_{threads}_threads"), |b| {
                b.iter(|| affinity_cc::<f32, u32>(aff.view(), &params).unwrap())
            });
        }
    }
    g.finish();
}

/// The global table of blockwise decoding: many small blocks on random affinities give
/// many block-local labels and shell joins.
fn bench_blockwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("uf_blockwise");
    g.sample_size(10);
    let n = 64usize;
    let block = 16u64;
    g.throughput(Throughput::Elements((n * n * n) as u64));
    for (name, aff) in [
        ("random", random_affinities(3, n)),
        ("cells", cell_affinities(3, n)),
    ] {
        let aff = InMemoryVolume::new(AnyArray::from(aff.into_dyn()), "aff");
        let out = InMemoryVolume::new(
            AnyArray::from(ndarray::Array3::<u32>::zeros((n, n, n)).into_dyn()),
            "seg",
        )
        .with_chunk_shape(&[block; 3])
        .unwrap();
        let params = DecodeOptions {
            cc: options(3, 1),
            ..DecodeOptions::default()
        };
        g.bench_function(format!("{name}_{n}^3_block_{block}"), |b| {
            b.iter(|| decode_blockwise(&aff, &out, &params, [block; 3], &NoProgress).unwrap())
        });
    }
    g.finish();
}

/// Raster-order joins of a 64³ volume: each voxel joined to its x, y and z predecessor
/// with probability 0.3 each (close to the percolation threshold: long chains).
fn raster_joins(n: usize) -> Vec<(usize, usize)> {
    let mut joins = Vec::new();
    for i in 0..n * n * n {
        for (k, d) in [1, n, n * n].into_iter().enumerate() {
            if i >= d && unit(3 * i + k) < 0.3 {
                joins.push((i, i - d));
            }
        }
    }
    joins
}

/// The union-finds the shared one replaced, verbatim but for names: path halving and the
/// smaller root kept, over `u32` (em-data's relabelling) and `usize` (em-decode's tables).
mod replaced {
    pub(crate) fn find_u32(p: &mut [u32], mut i: u32) -> u32 {
        while p[i as usize] != i {
            p[i as usize] = p[p[i as usize] as usize];
            i = p[i as usize];
        }
        i
    }

    pub(crate) fn union_u32(p: &mut [u32], a: usize, b: usize) {
        let (ra, rb) = (find_u32(p, a as u32), find_u32(p, b as u32));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            p[hi as usize] = lo;
        }
    }

    pub(crate) fn find_usize(parent: &mut [usize], mut p: usize) -> usize {
        while parent[p] != p {
            let g = parent[parent[p]];
            parent[p] = g;
            p = g;
        }
        p
    }

    pub(crate) fn union_usize(parent: &mut [usize], a: usize, b: usize) {
        let ra = find_usize(parent, a);
        let rb = find_usize(parent, b);
        if ra < rb {
            parent[rb] = ra;
        } else {
            parent[ra] = rb;
        }
    }
}

/// The same joins, then a find per element, through each implementation.
fn bench_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("uf_ops");
    g.sample_size(20);
    let n = 64usize;
    let len = n * n * n;
    let joins = raster_joins(n);
    g.throughput(Throughput::Elements(len as u64));
    g.bench_function("replaced_u32", |b| {
        b.iter(|| {
            let mut p: Vec<u32> = (0..len as u32).collect();
            for &(a, b) in &joins {
                replaced::union_u32(&mut p, a, b);
            }
            (0..len as u32)
                .map(|i| replaced::find_u32(&mut p, i) as usize)
                .sum::<usize>()
        })
    });
    g.bench_function("shared_u32", |b| {
        b.iter(|| {
            let mut p: Vec<u32> = (0..len as u32).collect();
            for &(a, b) in &joins {
                p.union(a, b);
            }
            (0..len).map(|i| p.find(i)).sum::<usize>()
        })
    });
    g.bench_function("replaced_usize", |b| {
        b.iter(|| {
            let mut p: Vec<usize> = (0..len).collect();
            for &(a, b) in &joins {
                replaced::union_usize(&mut p, a, b);
            }
            (0..len)
                .map(|i| replaced::find_usize(&mut p, i))
                .sum::<usize>()
        })
    });
    g.bench_function("shared_usize", |b| {
        b.iter(|| {
            let mut p: Vec<usize> = (0..len).collect();
            for &(a, b) in &joins {
                p.union(a, b);
            }
            (0..len).map(|i| p.find(i)).sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_short_range,
    bench_long_range,
    bench_blockwise,
    bench_ops
);
criterion_main!(benches);
