#!/usr/bin/env python3
"""Reference fixtures for the Rust re-implementation of waterz (crates/em-decode/src/waterz/).

What: runs `waterz.agglomerate` 0.10.1 (zwatershed fragments + iterative region merging) on
small deterministic affinity volumes and records, per case, the fragments (the segmentation
waterz returns for threshold 0.0), and for every threshold the segmentation, the merge
history and the region graph. Writes into crates/em-decode/tests/fixtures/waterz/ (or --out):

* manifest.json: {"waterz_version": "0.10.1", "cases": [...]}, one entry per case:
      name, affinities (file), shape [Z, Y, X], fragments_input (file or null), scoring (the
      exact string passed as scoring_function), thresholds (exactly as passed; waterz sorts
      them), thresholds_sorted, aff_threshold_low, aff_threshold_high, discretize_queue,
      fragments (file: what waterz returns for thresholds=[0.0]), num_fragments,
      initial_region_graph (the region graph returned with thresholds=[0.0], i.e. the RAG
      of the fragments with the initial scores), results: [{threshold, segmentation (file),
      num_segments, merge_history: [{a, b, c, score}], region_graph: [{u, v, score}]}]
      in the order waterz yields them (sorted thresholds).
  Scores are the float32 values waterz computes, written as Python floats (exact).
  The case "tiny" also carries its inputs and outputs inline (affinities_list,
  fragments_list, segmentation_list) for debugging.
  num_fragments / num_segments count the distinct non-zero ids (0 = background).
* <case>_affs.npy (float32 [3, Z, Y, X], C order; affs[d][z][y][x] is the affinity of
  voxel (z, y, x) to its neighbour at -1 along axis d, waterz's convention),
  <case>_fragments_input.npy (uint64 [Z, Y, X], only for given fragments),
  <case>_fragments.npy and <case>_seg<i>.npy (uint64 [Z, Y, X], i = index in the sorted
  thresholds). Several cases share one affinity file.

"results" come from calls with return_merge_history=True and return_region_graph=True.
Asking for the region graph has side effects in waterz 0.10.1: stale edges are rescored
(their stored score changes) and pushed into the queue again, so later thresholds can
merge less (an old queue entry whose edge now scores >= threshold stops the merging) and
the merge history can list the same merge twice. "results_without_region_graph" holds the
same run without return_region_graph: threshold, num_segments, merge_history,
same_as_with_region_graph, and segmentation (the file of "results" where equal, else
<case>_norg_seg<i>.npy).
waterz returns the same numpy array for every threshold (relabelled in place), and writes
into a given `fragments` array in place: both are copied here.

Reproducible: every input comes from numpy's PCG64 with fixed seeds; reruns rewrite
byte-identical .npy files and the same manifest.

Requirements (tools only, never runtime dependencies of the crates):

    pip install waterz==0.10.1 numpy
    # only for the JIT-compiled scoring functions (cases named jit_*):
    pip install witty; apt-get install -y g++ libboost-dev

    python3 tools/make_waterz_fixtures.py [--out DIR] [--no-jit]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

WATERZ_VERSION = "0.10.1"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "crates" / "em-decode" / "tests" / "fixtures" / "waterz"

MEAN = "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>"
HIST50 = "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256>>"
HIST50_FALSE = "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256, false>>"
HIST75_FALSE = "OneMinus<HistogramQuantileAffinity<RegionGraphType, 75, ScoreValue, 256, false>>"
HIST10_TRUE = "OneMinus<HistogramQuantileAffinity<RegionGraphType, 10, ScoreValue, 256, true>>"
SIZE = (
    "Divide<Subtract<MaxSize<RegionGraphType>, MinSize<RegionGraphType>>, "
    "Add<MaxSize<RegionGraphType>, MinSize<RegionGraphType>>>"
)
# need JIT compilation (witty, g++, boost headers)
QUANTILE50 = "OneMinus<QuantileAffinity<RegionGraphType, 50, ScoreValue>>"
MEANMAX2 = "OneMinus<MeanMaxKAffinity<RegionGraphType, 2, ScoreValue>>"
MINAFF = "OneMinus<MinAffinity<RegionGraphType, ScoreValue>>"
MAXAFF = "OneMinus<MaxAffinity<RegionGraphType, ScoreValue>>"
MUL_MEAN_MINSIZE = "Multiply<OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>, MinSize<RegionGraphType>>"

DEFAULT_LOW = 0.0001
DEFAULT_HIGH = 0.9999


# ---------------------------------------------------------------------------------------
# inputs


def cell_labels(shape, spacing, seed):
    """Wavy Voronoi cells, about `spacing` voxels across, labels 1..n (int64)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    # warp the coordinates so that the boundaries are wavy
    wz = z + 1.5 * np.sin(y / 3.0 + 0.7) * (shape[0] > 1)
    wy = y + 2.0 * np.sin(x / 4.0 + 0.3 * z)
    wx = x + 2.0 * np.sin(y / 5.0 + 1.1)
    n = max(2, int(np.prod([max(1.0, s / spacing) for s in shape]) * 1.5))
    seeds = rng.uniform(0, 1, size=(n, 3)) * np.array(shape, dtype=np.float64)
    d2 = (
        (wz[..., None] - seeds[:, 0]) ** 2
        + (wy[..., None] - seeds[:, 1]) ** 2
        + (wx[..., None] - seeds[:, 2]) ** 2
    )
    return np.argmin(d2, axis=-1).astype(np.int64) + 1


def boundary_affinities(labels, inside=0.9, across=0.1):
    """float32 [3, Z, Y, X]: `inside` between equal labels, `across` otherwise.

    affs[d][p] is the affinity between p and p - e_d; at index 0 along d (no neighbour,
    never read by waterz) it is `inside`.
    """
    affs = np.full((3,) + labels.shape, inside, dtype=np.float32)
    for d in range(3):
        if labels.shape[d] < 2:
            continue
        sl_hi = [slice(None)] * 3
        sl_lo = [slice(None)] * 3
        sl_hi[d] = slice(1, None)
        sl_lo[d] = slice(None, -1)
        same = labels[tuple(sl_hi)] == labels[tuple(sl_lo)]
        affs[d][tuple(sl_hi)] = np.where(same, inside, across)
    return affs


def noisy(affs, level, seed):
    rng = np.random.default_rng(seed)
    out = affs + rng.uniform(-level, level, size=affs.shape)
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0).astype(np.float32))


def cells_affs(shape, level, seed):
    return noisy(boundary_affinities(cell_labels(shape, 8.0, seed)), level, seed + 1000)


def uniform_affs(shape, seed):
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(rng.uniform(0.0, 1.0, size=(3,) + shape).astype(np.float32))


def plateau_affs(shape, seed):
    """Cells with strong noise, quantised to multiples of 0.25 (so exactly 0.0 and 1.0
    occur), plus a few boxes of exactly 1.0 / 0.5 / 0.0 (flat plateaus)."""
    affs = cells_affs(shape, 0.3, seed)
    affs = np.round(affs * 4.0) / 4.0
    affs[:, 1:3, 2:6, 2:7] = 1.0
    affs[:, 4:6, 10:14, 3:9] = 0.5
    affs[:, 0:2, 12:16, 12:16] = 0.0
    affs[0, 5:, 5:9, 14:18] = 0.75
    return np.ascontiguousarray(affs.astype(np.float32))


def grid_fragments(shape):
    """uint64 cell grid with non-consecutive ids (multiples of 7), zeros, and one id used
    for two separate pieces."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    ids = (1 + (z // 4) * 100 + (y // 6) * 10 + (x // 7)) * 7
    ids = ids.astype(np.uint64)
    ids[2:5, 3:9, 4:10] = 0  # background box
    ids[:, 0, :] = np.where(np.arange(shape[2]) % 5 == 0, 0, ids[:, 0, :])  # scattered zeros
    ids[6:8, 14:18, 15:19] = 7  # a second piece of id 7, far from the first
    return np.ascontiguousarray(ids)


# ---------------------------------------------------------------------------------------
# running waterz


def run_waterz(affs, thresholds, scoring, queue, low, high, fragments_input, region_graph=True):
    import waterz

    frags = None if fragments_input is None else fragments_input.copy()  # written in place
    out = []
    for seg, history, rg in waterz.agglomerate(
        affs,
        thresholds,
        fragments=frags,
        aff_threshold_low=low,
        aff_threshold_high=high,
        return_merge_history=True,
        return_region_graph=True,
        scoring_function=scoring,
        discretize_queue=queue,
    ) if region_graph else (
        (seg, history, [])
        for seg, history in waterz.agglomerate(
            affs,
            thresholds,
            fragments=frags,
            aff_threshold_low=low,
            aff_threshold_high=high,
            return_merge_history=True,
            scoring_function=scoring,
            discretize_queue=queue,
        )
    ):
        out.append(
            (
                seg.copy(),  # the same array is relabelled in place for the next threshold
                [
                    {"a": int(m["a"]), "b": int(m["b"]), "c": int(m["c"]), "score": float(m["score"])}
                    for m in history
                ],
                [{"u": int(e["u"]), "v": int(e["v"]), "score": float(e["score"])} for e in rg],
            )
        )
    return out


def count_ids(seg):
    ids = np.unique(seg)
    return int(np.count_nonzero(ids))


def connected_components_of_rag(rag, ids):
    parent = {i: i for i in ids}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for e in rag:
        a, b = find(e["u"]), find(e["v"])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return len({find(i) for i in ids})


def make_case(out, spec, written):
    name = spec["name"]
    affs = spec["affs"]
    assert affs.dtype == np.float32 and affs.flags["C_CONTIGUOUS"] and affs.ndim == 4
    aff_file = spec["aff_file"]
    if aff_file not in written:
        np.save(out / aff_file, affs)
        written[aff_file] = affs
    else:
        assert np.array_equal(written[aff_file], affs)
    frag_in = spec.get("fragments_input")
    frag_in_file = None
    if frag_in is not None:
        frag_in_file = f"{name}_fragments_input.npy"
        np.save(out / frag_in_file, frag_in)
    low = spec.get("low", DEFAULT_LOW)
    high = spec.get("high", DEFAULT_HIGH)
    queue = spec.get("queue", 0)
    scoring = spec["scoring"]
    thresholds = spec["thresholds"]

    # the fragments: what waterz returns for threshold 0 (nothing merges, scores >= 0)
    [(frags, hist0, rag0)] = run_waterz(affs, [0.0], scoring, queue, low, high, frag_in)
    assert hist0 == [], (name, hist0[:3])
    if frag_in is not None:
        assert np.array_equal(frags, frag_in), name
    frag_file = f"{name}_fragments.npy"
    np.save(out / frag_file, frags)
    frag_ids = [int(i) for i in np.unique(frags) if i != 0]

    results = run_waterz(affs, thresholds, scoring, queue, low, high, frag_in)
    thresholds_sorted = sorted(thresholds)
    assert len(results) == len(thresholds_sorted)
    res_json = []
    for i, (t, (seg, hist, rag)) in enumerate(zip(thresholds_sorted, results)):
        seg_file = f"{name}_seg{i}.npy"
        np.save(out / seg_file, seg)
        entry = {
            "threshold": float(t),
            "segmentation": seg_file,
            "num_segments": count_ids(seg),
            "merge_history": hist,
            "region_graph": rag,
        }
        if spec.get("inline"):
            entry["segmentation_list"] = seg.tolist()
        res_json.append(entry)

    # the same without return_region_graph (which has side effects on the merging, see
    # the module docstring): segmentation file only where it differs
    no_rg = []
    for i, (t, (seg, hist, _), r) in enumerate(
        zip(thresholds_sorted, run_waterz(affs, thresholds, scoring, queue, low, high, frag_in, False), results)
    ):
        same = bool(np.array_equal(seg, r[0]))
        entry = {"threshold": float(t), "num_segments": count_ids(seg), "same_as_with_region_graph": same and hist == r[1]}
        if same:
            entry["segmentation"] = res_json[i]["segmentation"]
        else:
            entry["segmentation"] = f"{name}_norg_seg{i}.npy"
            np.save(out / entry["segmentation"], seg)
        entry["merge_history"] = hist
        no_rg.append(entry)

    # everything connected merges for a threshold above every score
    if thresholds_sorted[-1] > 1.0 and scoring in (MEAN,):
        ncc = connected_components_of_rag(rag0, frag_ids)
        assert res_json[-1]["num_segments"] == ncc, (name, res_json[-1]["num_segments"], ncc)

    case = {
        "name": name,
        "description": spec["description"],
        "shape": list(affs.shape[1:]),
        "affinities": aff_file,
        "fragments_input": frag_in_file,
        "scoring": scoring,
        "thresholds": thresholds,
        "thresholds_sorted": thresholds_sorted,
        "aff_threshold_low": low,
        "aff_threshold_high": high,
        "discretize_queue": queue,
        "fragments": frag_file,
        "num_fragments": len(frag_ids),
        "num_background_voxels": int(np.count_nonzero(frags == 0)),
        "initial_region_graph": rag0,
        "results": res_json,
        "results_without_region_graph": no_rg,
    }
    if spec.get("inline"):
        case["affinities_list"] = affs.tolist()
        case["fragments_list"] = frags.tolist()
        if frag_in is not None:
            case["fragments_input_list"] = frag_in.tolist()
    return case


def specs(jit):
    s = []
    tiny = noisy(boundary_affinities(np.array([[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 2]],
                                                [[1, 1, 2, 2], [3, 1, 2, 2], [3, 3, 3, 3]]])), 0.05, 1)
    s.append(dict(name="tiny", aff_file="tiny_affs.npy", affs=tiny, scoring=MEAN,
                  thresholds=[0.1, 0.5, 0.9, 1.5], inline=True,
                  description="2x3x4, three cells, small noise; inputs/outputs also inline"))

    lo = cells_affs((6, 18, 18), 0.05, 11)
    hi = cells_affs((6, 18, 18), 0.3, 11)
    t5 = [0.1, 0.3, 0.5, 0.7, 0.9]
    s.append(dict(name="cells_lownoise_mean", aff_file="cells_lownoise_affs.npy", affs=lo,
                  scoring=MEAN, thresholds=t5, description="wavy cells, noise +-0.05, mean, priority queue"))
    s.append(dict(name="cells_highnoise_mean", aff_file="cells_highnoise_affs.npy", affs=hi,
                  scoring=MEAN, thresholds=t5, description="wavy cells, noise +-0.3, mean, priority queue"))
    s.append(dict(name="cells_highnoise_mean_q256", aff_file="cells_highnoise_affs.npy", affs=hi,
                  scoring=MEAN, queue=256, thresholds=t5, description="as cells_highnoise_mean, bin queue 256"))
    s.append(dict(name="cells_highnoise_hist50", aff_file="cells_highnoise_affs.npy", affs=hi,
                  scoring=HIST50, thresholds=t5,
                  description="histogram quantile 50, InitWithMax left to its default (true)"))
    s.append(dict(name="cells_highnoise_hist50_false_q256", aff_file="cells_highnoise_affs.npy", affs=hi,
                  scoring=HIST50_FALSE, queue=256, thresholds=t5,
                  description="histogram quantile 50, InitWithMax false, bin queue 256"))
    s.append(dict(name="cells_lownoise_lowhigh", aff_file="cells_lownoise_affs.npy", affs=lo,
                  scoring=MEAN, low=0.1, high=0.8, thresholds=[0.2, 0.4, 0.6, 0.8],
                  description="aff_threshold_low 0.1 / high 0.8"))

    uni = uniform_affs((6, 12, 12), 21)
    s.append(dict(name="uniform_mean_unsorted", aff_file="uniform_affs.npy", affs=uni, scoring=MEAN,
                  thresholds=[0.7, 0.2, 0.5, 0.9, 0.35],
                  description="uniform random affinities (many fragments); thresholds passed unsorted"))
    s.append(dict(name="uniform_hist75_false", aff_file="uniform_affs.npy", affs=uni, scoring=HIST75_FALSE,
                  thresholds=[0.2, 0.4, 0.6, 0.8], description="histogram quantile 75, InitWithMax false"))

    pl = plateau_affs((6, 16, 16), 31)
    s.append(dict(name="plateaus_mean", aff_file="plateaus_affs.npy", affs=pl, scoring=MEAN,
                  thresholds=[0.25, 0.5, 0.75, 1.0],
                  description="affinities in {0, .25, .5, .75, 1} (plateaus, ties in the queue); threshold 1.0"))
    s.append(dict(name="plateaus_hist10_true_q256", aff_file="plateaus_affs.npy", affs=pl, scoring=HIST10_TRUE,
                  queue=256, thresholds=[0.1, 0.3, 0.5, 0.8],
                  description="plateaus, histogram quantile 10, InitWithMax true, bin queue 256"))
    s.append(dict(name="plateaus_mean_lowhigh", aff_file="plateaus_affs.npy", affs=pl, scoring=MEAN,
                  low=0.25, high=0.75, thresholds=[0.3, 0.6],
                  description="plateaus with aff_threshold_low 0.25 / high 0.75 (values equal to low and high)"))

    gshape = (8, 16, 20)
    # true cells are blocks of 2x2x2 grid cells: half of the grid faces are real boundaries
    z, y, x = np.meshgrid(*[np.arange(n) for n in gshape], indexing="ij")
    gaffs = noisy(boundary_affinities(1 + (z // 4) * 100 + (y // 12) * 10 + x // 14), 0.3, 41)
    s.append(dict(name="given_fragments_mean", aff_file="given_fragments_affs.npy", affs=gaffs,
                  fragments_input=grid_fragments(gshape), scoring=MEAN,
                  thresholds=[0.3, 0.5, 0.7, 1.0, 1.01],
                  description="fragments given (ids multiples of 7, zeros, id 7 in two pieces); "
                              "thresholds 1.0 and 1.01 (everything connected merges)"))

    ani = cells_affs((4, 20, 24), 0.2, 51)
    s.append(dict(name="aniso_size", aff_file="aniso_affs.npy", affs=ani, scoring=SIZE,
                  thresholds=[0.2, 0.5, 0.8, 1.0], description="4x20x24, size-only scoring function"))
    s.append(dict(name="aniso_size_q256", aff_file="aniso_affs.npy", affs=ani, scoring=SIZE, queue=256,
                  thresholds=[0.2, 0.5, 0.8, 1.0], description="as aniso_size, bin queue 256"))
    s.append(dict(name="aniso_mean_all", aff_file="aniso_affs.npy", affs=ani, scoring=MEAN,
                  thresholds=[0.5, 1.5], description="4x20x24, mean; threshold 1.5 merges everything connected"))

    z1 = cells_affs((1, 16, 16), 0.3, 61)
    s.append(dict(name="z1_mean_q256", aff_file="z1_affs.npy", affs=z1, scoring=MEAN, queue=256,
                  low=0.1, high=0.8, thresholds=[0.2, 0.4, 0.6, 0.8], description="single z slice 1x16x16"))
    y1 = cells_affs((6, 1, 20), 0.3, 71)
    s.append(dict(name="y1_hist50_false", aff_file="y1_affs.npy", affs=y1, scoring=HIST50_FALSE,
                  thresholds=[0.2, 0.4, 0.6, 0.8], description="6x1x20 (y dimension 1)"))

    if jit:
        j = cells_affs((4, 14, 14), 0.3, 81)
        for nm, sf in (("quantile50", QUANTILE50), ("meanmax2", MEANMAX2), ("min", MINAFF),
                       ("max", MAXAFF), ("mul_mean_minsize", MUL_MEAN_MINSIZE)):
            thr = [0.2, 0.4, 0.6, 0.8] if sf != MUL_MEAN_MINSIZE else [1.0, 5.0, 20.0, 80.0]
            s.append(dict(name=f"jit_{nm}", aff_file="jit_affs.npy", affs=j, scoring=sf, thresholds=thr,
                          description=f"JIT-compiled scoring function {sf}"))
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-jit", action="store_true", help="skip the JIT-compiled scoring functions")
    args = ap.parse_args()

    import waterz

    if waterz.__version__ != WATERZ_VERSION:
        sys.exit(f"need waterz=={WATERZ_VERSION}, found {waterz.__version__}")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*.npy"):
        f.unlink()

    # waterz's C++ prints progress to stdout; keep ours readable by sending it to /dev/null
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    cases = []
    written = {}
    try:
        for spec in specs(jit=not args.no_jit):
            os.dup2(devnull, 1)
            try:
                case = make_case(out, spec, written)
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
            cases.append(case)
            print(f"{case['name']:34s} {str(case['shape']):13s} fragments={case['num_fragments']:4d} "
                  f"segments={[r['num_segments'] for r in case['results']]}", flush=True)
    finally:
        os.close(devnull)
        os.close(saved)

    manifest = {
        "waterz_version": WATERZ_VERSION,
        "generator": "tools/make_waterz_fixtures.py",
        "conventions": (
            "affinities float32 [3,Z,Y,X], affs[d][z][y][x] links voxel (z,y,x) to its -1 "
            "neighbour along axis d; segmentations uint64 [Z,Y,X]; results in sorted threshold "
            "order; scores are the float32 values waterz returns; thresholds are converted to "
            "float32 by waterz; merge proceeds while score < threshold"
        ),
        "cases": cases,
    }
    with open(out / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=None, separators=(",", ":"))
        f.write("\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {len(cases)} cases to {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
