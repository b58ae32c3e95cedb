#!/usr/bin/env python3
"""Reference fixtures for em-decode's mutex watershed (`em_decode::mutex_watershed`).

The reference is the `mwatershed` package (github.com/pattonw/mwatershed, version
MWATERSHED_VERSION, pinned in tools/requirements-fixtures.txt): `mwatershed.agglom(signed,
offsets)` visits edges by |weight| descending, positive weights attractive, negative
repulsive. Our convention (affogato's) is an affinity volume whose first `attractive`
channels are attractive with weight `aff` and the rest repulsive with weight `1 - aff`; the
script hands mwatershed `+aff` for attractive and `-(1 - aff)` for repulsive channels.

Every case is built without ties, which is where the two may order edges differently: the
weights of all edges of a case are distinct multiples of 2^-22 in (0, 1), so `aff` and
`1 - aff` are exact in float32 and float64 alike. Affinities come from a small Voronoi
segmentation (attractive: high inside a cell; repulsive: high across a boundary) plus smooth
noise, then ranked onto that grid.

Options mwatershed does not share are emulated by giving the edges they remove weight 0
(mwatershed visits those last, as repulsive edges, which changes no partition):
  * strides (affogato's: a repulsive edge is kept only at voxels whose coordinates are
    multiples of the strides; mwatershed anchors its own strides at each offset's first
    voxel instead, so it is not used);
  * a mask (edges touching a voxel outside it are removed; we label such voxels 0);
  * NaN / +-inf affinities (we ignore such edges; mwatershed refuses NaN).

mwatershed labels a voxel 0 when it has no attractive edge of positive weight; we give it a
segment of its own. Per case the manifest names `expected`: mwatershed's partition in our
numbering (segments 1..K by first appearance in C order, its zeros as single-voxel segments,
voxels outside the mask 0), which the Rust test compares voxel for voxel, and `reference`:
mwatershed's raw output. Run:

    pip install -r tools/requirements-fixtures.txt
    python3 tools/make_mws_fixtures.py [--out crates/em-decode/tests/fixtures/mws]
"""
import argparse
import importlib.metadata
import json
from pathlib import Path

import numpy as np

import mwatershed

MWATERSHED_VERSION = "0.5.4"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "crates/em-decode/tests/fixtures/mws"
GRID = 1 << 22

# PyTorch Connectomics' SNEMI3D layout (tutorials/rsunet_snemi.yaml) in our convention:
# em_decode::MwsOptions::default().
PYTC = [[0, 0, -1], [0, -1, 0], [-1, 0, 0], [-2, 0, 0], [-3, 0, 0], [-4, 0, 0],
        [0, 0, -3], [0, 0, -9], [0, 0, -27], [0, -3, 0], [0, -9, 0], [0, -27, 0]]
LONG = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -3, 0], [0, 0, -3],
        [0, -9, 0], [0, 0, -9]]
MIXED = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 4, 0], [0, 0, -4], [2, 3, -3]]


def voronoi(shape, cells, rng):
    """A segmentation of `shape` into `cells` Voronoi cells (ids 0..cells-1)."""
    pts = rng.uniform(0, 1, (cells, 3)) * np.array(shape)
    grid = np.indices(shape).reshape(3, -1).T
    d = ((grid[:, None, :] - pts[None]) ** 2).sum(-1)
    return d.argmin(1).reshape(shape)


def smooth(a):
    """Spatially correlated noise of unit standard deviation."""
    for ax in range(a.ndim):
        a = (np.roll(a, 1, ax) + a + np.roll(a, -1, ax)) / 3
    return a / a.std()


def partner(a, offset):
    """`a[v + offset]` for every voxel (garbage where the partner lies outside)."""
    out = np.zeros_like(a)
    if any(abs(o) >= s for o, s in zip(offset, a.shape)):
        return out
    src = tuple(slice(max(0, o), s - max(0, -o)) for o, s in zip(offset, a.shape))
    dst = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(offset, a.shape))
    out[dst] = a[src]
    return out


def weights(shape, offsets, attractive, rng, noise):
    """Edge weights in (0, 1), all distinct on the 2^-22 grid; returns (weights, seg)."""
    seg = voronoi(shape, max(2, int(np.prod(shape) / 300)), rng)
    w = np.zeros((len(offsets),) + shape)
    for c, o in enumerate(offsets):
        same = seg == partner(seg, o)
        good = same if c < attractive else ~same
        w[c] = np.where(good, 0.8, 0.2) + noise * smooth(rng.standard_normal(shape))
        w[c] += 0.05 * rng.standard_normal(shape)
    # Rank every value onto distinct grid points near its own value.
    flat = w.ravel()
    order = np.argsort(flat, kind="stable")
    q = np.clip(np.floor(1 / (1 + np.exp(-4 * (flat[order] - 0.5))) * GRID), 1, GRID - 1)
    q = q.astype(np.int64)
    for i in range(1, len(q)):
        q[i] = max(q[i], q[i - 1] + 1)
    if q[-1] >= GRID:
        q = np.linspace(1, GRID - 1, len(q)).astype(np.int64)
    out = np.empty(len(flat))
    out[order] = q / GRID
    assert len(np.unique(out)) == len(out)
    return out.reshape(w.shape), seg


def relabel(reference, mask):
    """mwatershed's labels in our numbering: zeros are single-voxel segments, segments
    numbered 1.. by first appearance in C order, voxels outside `mask` 0."""
    flat = reference.ravel()
    m = np.ones(flat.shape, bool) if mask is None else mask.ravel()
    out = np.zeros(flat.shape, np.uint32)
    ids = {}
    for i in range(flat.size):
        if not m[i]:
            continue
        key = ("single", i) if flat[i] == 0 else ("id", int(flat[i]))
        if key not in ids:
            ids[key] = len(ids) + 1
        out[i] = ids[key]
    return out.reshape(reference.shape), len(ids)


def case(name, shape, offsets, attractive, seed, strides=(1, 1, 1), mask=False,
         non_finite=False, noise=0.3):
    rng = np.random.default_rng(seed)
    w, _ = weights(shape, offsets, attractive, rng, noise)
    aff = np.where(np.arange(len(offsets))[:, None, None, None] < attractive, w, 1 - w)
    aff = aff.astype(np.float32)
    assert np.array_equal(np.where(np.arange(len(offsets))[:, None, None, None] < attractive,
                                   aff, np.float32(1) - aff).astype(np.float64), w)
    signed = np.where(np.arange(len(offsets))[:, None, None, None] < attractive, w, -w)
    keep = np.ones(aff.shape, bool)
    coords = np.indices(shape)
    for c in range(attractive, len(offsets)):
        for axis in range(3):
            keep[c] &= coords[axis] % strides[axis] == 0
    voxel_mask = None
    if mask:
        # A ball with a slab cut out: two regions, a hole and a border.
        centre = np.array(shape) / 2
        r2 = sum(((coords[a] - centre[a]) / max(shape[a] / 2, 1)) ** 2 for a in range(3))
        voxel_mask = (r2 < 0.8) & ~((coords[2] >= shape[2] // 2) & (coords[2] < shape[2] // 2 + 2))
        for c, o in enumerate(offsets):
            keep[c] &= voxel_mask & partner(voxel_mask, o)
    if non_finite:
        # Dense enough that some voxels lose every attractive edge: mwatershed zeros.
        bad = rng.random(aff.shape) < 0.3
        aff[bad] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), bad.sum())
        keep &= ~bad
    signed = np.where(keep, signed, 0.0)
    # mwatershed panics on offsets as long as the volume; such channels have no edges.
    fits = [c for c, o in enumerate(offsets) if all(abs(d) < n for d, n in zip(o, shape))]
    reference = mwatershed.agglom(signed[fits], [list(map(int, offsets[c])) for c in fits])
    expected, segments = relabel(reference, voxel_mask)
    files = {"affinities": f"{name}_aff.npy", "expected": f"{name}_expected.npy",
             "reference": f"{name}_mwatershed.npy"}
    arrays = {"affinities": aff, "expected": expected,
              "reference": reference.astype(np.uint32)}
    if voxel_mask is not None:
        files["mask"] = f"{name}_mask.npy"
        arrays["mask"] = voxel_mask
    entry = {
        "name": name,
        "shape": list(shape),
        "offsets": [list(map(int, o)) for o in offsets],
        "attractive": attractive,
        "strides": list(strides),
        "non_finite": int((~np.isfinite(aff)).sum()),
        "segments": segments,
        "files": files,
    }
    return entry, arrays


CASES = [
    dict(name="long_12x24x24", shape=(12, 24, 24), offsets=LONG, attractive=3, seed=1),
    dict(name="pytc_default_12x24x24", shape=(12, 24, 24), offsets=PYTC, attractive=3, seed=2,
         noise=0.2),
    dict(name="mixed_8x16x16", shape=(8, 16, 16), offsets=MIXED, attractive=3, seed=3),
    dict(name="attractive5_8x16x16", shape=(8, 16, 16), offsets=LONG[:3] + [[0, -2, 0], [0, 0, -2]]
         + LONG[6:], attractive=5, seed=4),
    dict(name="strided_12x24x24", shape=(12, 24, 24), offsets=LONG, attractive=3, seed=5,
         strides=(1, 2, 2)),
    dict(name="strided_mixed_9x13x11", shape=(9, 13, 11), offsets=MIXED, attractive=3, seed=6,
         strides=(2, 3, 2)),
    dict(name="mask_10x20x20", shape=(10, 20, 20), offsets=LONG, attractive=3, seed=7, mask=True),
    dict(name="non_finite_8x16x16", shape=(8, 16, 16), offsets=LONG, attractive=3, seed=8,
         non_finite=True),
    dict(name="flat_1x32x32", shape=(1, 32, 32), offsets=[[0, -1, 0], [0, 0, -1], [0, -4, 0],
         [0, 0, -4], [0, -3, 3]], attractive=2, seed=9, noise=0.4),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    installed = importlib.metadata.version("mwatershed")
    if installed != MWATERSHED_VERSION:
        raise SystemExit(f"mwatershed {installed} installed; the fixtures pin {MWATERSHED_VERSION}")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "generator": "tools/make_mws_fixtures.py",
        "reference": f"mwatershed=={MWATERSHED_VERSION}",
        "convention": "expected: segments 1..K by first appearance (C order), "
                      "mwatershed's zeros as single-voxel segments, outside the mask 0",
        "cases": [],
    }
    for spec in CASES:
        entry, arrays = case(**spec)
        for key, array in arrays.items():
            np.save(args.out / entry["files"][key], array)
        manifest["cases"].append(entry)
        print(f"{entry['name']}: {entry['segments']} segments")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
