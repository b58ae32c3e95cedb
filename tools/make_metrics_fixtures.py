#!/usr/bin/env python3
"""Reference fixtures for em-metrics: VOI / adapted Rand (voxel) and skeleton ERL / NERL.

Writes two JSON files (default into crates/em-metrics/tests/fixtures/):

* voxel_cases.json: small GT/prediction label volumes (inline, flat C-order lists) with
  funlib.evaluate `rand_voi` (all keys, plus its per-cluster scores), scikit-image
  `adapted_rand_error` and `variation_of_information`, exact contingency sums and an
  independent float64 reference.
* erl_cases.json: skeleton graphs in our skeleton JSON format (shared ARCHITECTURE.md) with
  an inline prediction volume, and the numbers of BANIS `compute_metrics` (funlib ERL / max
  ERL / NERL, mergers, splits, node-level rand_voi, adapted NERL for k = 5, 20, 100, inf),
  funlib/BANIS edge counts, em_erl's NERL for a few `merge_threshold`s (when an em_erl tree
  is given) and an independent float64 reference (`ref_f64`) with per-skeleton details.

Every case is deterministic (fixed seeds, numpy PCG64); running the script again rewrites the
same files. The script asserts that the independent reference agrees with funlib/BANIS
(float64 ~1e-12; funlib's ERL is float32: rel 2e-5) and with scikit-image.

Install (reference libraries are tools only, never runtime dependencies):

    pip install -r tools/requirements-fixtures.txt  # numpy, scipy, scikit-image, networkx,
                                                  # cython, wheel, tqdm, zarr, imageio, ...
    # funlib.evaluate is not on PyPI. Its setup.py imports Cython and numpy at the top and it
    # has no pyproject.toml, so pip's isolated build fails with "No module named 'Cython'";
    # build it in the current environment (needs g++; cython and wheel from requirements):
    git clone https://github.com/funkelab/funlib.evaluate /tmp/funlib.evaluate
    git -C /tmp/funlib.evaluate checkout d2852b355910ee8081d0f6edc787c80cb94db909
    pip install --no-build-isolation /tmp/funlib.evaluate
    # BANIS's metrics.py (adapted NERL), github.com/jasonkena/banis (a copy of BANIS that
    # holds the commit "add adapted nerl to metrics", cb319137), HEAD 9afed3b8:
    git clone https://github.com/jasonkena/banis /tmp/banis     # or: BANIS_ROOT=<dir>
    # em_erl (optional; PytorchConnectomics/em_erl, not on PyPI), HEAD cd1ad8bc:
    git clone https://github.com/PytorchConnectomics/em_erl /tmp/em_erl  # or EM_ERL_ROOT=<dir>

    python3 tools/make_metrics_fixtures.py [--out DIR] [--banis /tmp/banis] [--em-erl /tmp/em_erl]

BANIS is required (its adapted NERL is the reference); em_erl is optional (its block is then
left out). Non-finite numbers are written as the strings "NaN", "Infinity", "-Infinity"
(JSON has no such numbers). Floats are Python reprs (shortest round-trip of the f64;
funlib's float32 ERL values are the exact f64 of the f32).
"""
import argparse
import importlib
import json
import math
import os
import pickle
import sys
import tempfile
import types
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers_metrics import (  # noqa: E402
    ADAPTED_KS, _quiet, _to_builtin, load_banis_metrics, perturb_segmentation, random_tubes,
    relabel_consecutive, skeleton_json_to_graph)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "crates/em-metrics/tests/fixtures"
FUNLIB_COMMIT = "d2852b355910ee8081d0f6edc787c80cb94db909"
BANIS_COMMIT = "9afed3b8932a22b8dd05440bba6936f521e073fe"  # metrics.py last changed in cb319137
EM_ERL_COMMIT = "cd1ad8bcfd30ebf78e156c495314299f86934a9b"
EM_ERL_THRESHOLDS = (1, 6, 21, 101, 50)
K_NAMES = {5: "5", 20: "20", 100: "100", math.inf: "inf"}
U64 = 2 ** 64


# ============================================================================ JSON helpers

def clean(x):
    """Builtin types; non-finite floats as strings."""
    x = _to_builtin(x)
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    return x


def dumps(x, indent=0):
    """Pretty JSON with lists of scalars on one line."""
    pad, pad1 = " " * indent, " " * (indent + 1)
    if isinstance(x, dict):
        if not x:
            return "{}"
        if all(not isinstance(v, (dict, list)) or (isinstance(v, list) and all(
                not isinstance(w, (dict, list)) for w in v)) for v in x.values()) and len(x) <= 6:
            return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in x.items()) + "}"
        items = [f"{pad1}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in x.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(x, list):
        if all(not isinstance(v, (dict, list)) for v in x):
            return "[" + ",".join(json.dumps(v, allow_nan=False) for v in x) + "]"
        return "[\n" + ",\n".join(pad1 + dumps(v, indent + 1) for v in x) + "\n" + pad + "]"
    return json.dumps(x, allow_nan=False)


def close(a, b, rel=0.0, abs_=0.0):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


def ratio(a, b):
    """a / b with IEEE semantics for b == 0 (as the C++/numpy code does)."""
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a)


# ============================================================================ voxel metrics

def contingency(gt, pred):
    """Exact counts over voxels with gt != 0: {(g, p): n}, {g: a}, {p: b}."""
    gt = gt.ravel().astype(np.uint64)
    pred = pred.ravel().astype(np.uint64)
    keep = gt != 0
    pairs = Counter(zip(gt[keep].tolist(), pred[keep].tolist()))
    a, b = Counter(), Counter()
    for (g, p), n in pairs.items():
        a[g] += n
        b[p] += n
    return pairs, a, b


def entropy(counts, n):
    return -math.fsum((c / n) * math.log2(c / n) for c in counts) + 0.0 if n else 0.0


def ref_voxel_metrics(gt, pred):
    """Independent float64 reference of funlib's definitions (and skimage's adapted Rand)."""
    pairs, a, b = contingency(gt, pred)
    n = sum(a.values())
    s_ij = sum(v * v for v in pairs.values())
    s_a = sum(v * v for v in a.values())
    s_b = sum(v * v for v in b.values())
    h_a, h_b, h_ab = entropy(a.values(), n), entropy(b.values(), n), entropy(pairs.values(), n)
    # conditional entropies summed term by term (no cancellation)
    voi_split = -math.fsum((v / n) * math.log2(v / a[g]) for (g, _), v in pairs.items()) + 0.0
    voi_merge = -math.fsum((v / n) * math.log2(v / b[p]) for (_, p), v in pairs.items()) + 0.0
    exact = {"n": n, "sum_nij2": s_ij, "sum_a2": s_a, "sum_b2": s_b,
             "n_gt_labels": len(a), "n_pred_labels": len(b), "n_pairs": len(pairs)}
    ref = {
        "H_gt": h_a, "H_pred": h_b, "H_joint": h_ab,
        "voi_split": voi_split, "voi_merge": voi_merge, "voi_sum": voi_split + voi_merge,
        "rand_split": ratio(s_ij, s_a), "rand_merge": ratio(s_ij, s_b),
        "arand": 1.0 - ratio(2 * s_ij, s_a + s_b),
        "nvi_split": ratio(voi_split, h_ab), "nvi_merge": ratio(voi_merge, h_ab),
        "nid": 1.0 - ratio(h_a + h_b - h_ab, max(h_a, h_b)),
        # scikit-image adapted_rand_error (alpha 0.5): self-pairs removed; its "precision"
        # divides by the GT sum, its "recall" by the prediction sum (see report / README)
        "are_skimage": 1.0 - ratio(s_ij - n, 0.5 * (s_a - n) + 0.5 * (s_b - n)),
        "are_skimage_precision": ratio(s_ij - n, s_a - n),
        "are_skimage_recall": ratio(s_ij - n, s_b - n),
    }
    return exact, ref


def skimage_metrics(gt, pred):
    from skimage.metrics import adapted_rand_error, variation_of_information

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        are, prec, rec = adapted_rand_error(gt, pred)
        vi_none = variation_of_information(gt, pred)
        vi_0 = variation_of_information(gt, pred, ignore_labels=[0])
    return {
        "adapted_rand_error": {"error": float(are), "precision": float(prec), "recall": float(rec)},
        "variation_of_information": {
            "ignore_labels_none": {"split": float(vi_none[0]), "merge": float(vi_none[1])},
            "ignore_labels_0": {"split": float(vi_0[0]), "merge": float(vi_0[1])},
        },
    }


def funlib_voxel(gt, pred):
    from funlib.evaluate import rand_voi

    r = rand_voi(np.ascontiguousarray(gt, dtype=np.uint64),
                 np.ascontiguousarray(pred, dtype=np.uint64), return_cluster_scores=True)
    out = {k: float(r[k]) for k in
           ("voi_split", "voi_merge", "rand_split", "rand_merge", "nvi_split", "nvi_merge", "nid")}
    if len(r["voi_split_i"]) <= 30 and len(r["voi_merge_j"]) <= 30:  # keep the file small
        out["voi_split_i"] = [[int(k), float(v)] for k, v in sorted(r["voi_split_i"].items())]
        out["voi_merge_j"] = [[int(k), float(v)] for k, v in sorted(r["voi_merge_j"].items())]
    return out


def voronoi(shape, n_seeds, rng, seeds=None, boundary=False):
    """Nearest-seed labels 1..n (optionally 0 on voxels whose 6-neighbour differs)."""
    if seeds is None:
        seeds = rng.uniform(0, np.asarray(shape) - 1, size=(n_seeds, 3))
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    d = ((grid[..., None, :] - seeds) ** 2).sum(-1)
    lab = (np.argmin(d, axis=-1) + 1).astype(np.uint32)
    if boundary:
        edge = np.zeros(shape, bool)
        for ax in range(3):
            diff = np.diff(lab, axis=ax) != 0
            sl = [slice(None)] * 3
            sl[ax] = slice(0, -1)
            edge[tuple(sl)] |= diff
        lab = np.where(edge, 0, lab).astype(np.uint32)
    return lab, seeds


def voxel_case_list():
    rng = np.random.default_rng(20240611)
    cases = []

    def add(name, gt, pred, note, dtype="uint32"):
        gt, pred = np.asarray(gt), np.asarray(pred)
        assert gt.shape == pred.shape and gt.ndim == 3, name
        cases.append((name, gt.astype(dtype), pred.astype(dtype), note, dtype))

    def rint(lo, hi, shape):
        return rng.integers(lo, hi + 1, size=shape)

    add("funlib_1x1x11", [[[1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4]]], [[[3, 3, 3, 3, 4, 5, 6, 6, 5, 5, 5]]],
        "funlib test_rand_voi example (same as shared m1_funlib_1x1x11); no zeros", "uint64")
    g = rint(0, 5, (6, 7, 8))
    add("identical_with_gt0", g, g, "pred == gt, GT has zeros: VOI 0, Rand 1")
    perm = np.array([0, 17, 3, 99, 2, 40])
    add("identical_up_to_relabel", g, perm[g], "pred = gt with ids permuted (0 kept): perfect")
    add("random_no_zeros", rint(1, 3, (4, 5, 6)), rint(1, 4, (4, 5, 6)), "independent random labels")
    g = rint(1, 6, (8, 8, 8)) * (rng.random((8, 8, 8)) > 0.3)
    add("random_gt_zeros", g, rint(1, 7, (8, 8, 8)), "~30% GT 0 (ignored)")
    p = rint(1, 5, (8, 8, 8)) * (rng.random((8, 8, 8)) > 0.4)
    add("random_pred_zeros", rint(1, 6, (8, 8, 8)), p, "~40% pred 0 (an ordinary label)")
    g = rint(1, 4, (5, 6, 7)) * (rng.random((5, 6, 7)) > 0.25)
    p = rint(1, 4, (5, 6, 7)) * (rng.random((5, 6, 7)) > 0.25)
    add("random_both_zeros", g, p, "zeros in both")
    blocks = np.repeat(np.repeat(rint(1, 4, (2, 2, 2)), 3, 0), 3, 1)
    blocks = np.repeat(blocks, 3, 2)
    add("pred_all_different", blocks, np.arange(1, blocks.size + 1).reshape(blocks.shape),
        "every pred voxel its own id: merge VOI 0; skimage recall (pred pairs) 0/0 = NaN")
    add("gt_all_different", np.arange(1, blocks.size + 1).reshape(blocks.shape), blocks,
        "every GT voxel its own id: split VOI 0; skimage precision (GT pairs) 0/0 = NaN")
    g = rint(0, 5, (6, 6, 6))
    add("pred_single_label", g, np.ones_like(g), "pred one label: everything merged")
    add("pred_all_zero", g, np.zeros_like(g), "pred all 0 (0 is a label like any other)")
    add("gt_all_zero", np.zeros((3, 4, 5)), rint(0, 3, (3, 4, 5)),
        "no GT voxel: funlib rand 0/0 = NaN, voi 0, nvi/nid NaN")
    g = np.zeros((3, 4, 5))
    g[1, 2, 3] = 9
    add("gt_single_voxel", g, rint(0, 3, (3, 4, 5)), "one GT voxel: all entropies 0")
    add("single_label_identical", np.ones((2, 3, 4)), np.full((2, 3, 4), 5),
        "one label each: VOI 0, Rand 1, nvi/nid 0/0 = NaN in funlib")
    g = np.repeat(np.repeat(rint(1, 9, (3, 3, 3)), 2, 0), 2, 1).repeat(4, 2)
    p = g * 2 + (np.arange(12)[None, None, :] % 4 >= 2)
    add("split_halves", g, p, "each GT region split along x: merge VOI 0")
    add("merged_pairs", g, (g + 1) // 2, "pairs of GT ids merged: split VOI 0")
    gv, seeds = voronoi((10, 10, 10), 12, rng, boundary=True)
    pv, _ = voronoi((10, 10, 10), 12, rng, seeds=seeds + rng.normal(scale=1.0, size=seeds.shape))
    add("voronoi_10_gt_boundaries", gv, pv, "Voronoi GT with 0 boundaries, pred = jittered seeds")
    pv0, _ = voronoi((10, 10, 10), 12, rng, seeds=seeds + rng.normal(scale=1.0, size=seeds.shape),
                     boundary=True)
    add("voronoi_10_both_boundaries", gv, pv0 * 3 + 1000 * (pv0 > 0), "both with 0 boundaries")
    tubes, _ = random_tubes((8, 12, 12), 6, rng, length=(12, 25), radius=(1.0, 2.0))
    add("tubes_8x12x12", tubes, perturb_segmentation(tubes, rng, n_splits=3, n_merges=1, n_erase=2,
                                                      erase_radius=2),
        "random tubes (mostly background GT 0), pred with splits/merges/erasures")
    g = rint(0, 4, (4, 5, 6)).astype(np.uint64)
    p = rint(0, 5, (4, 5, 6)).astype(np.uint64)
    gmap = np.array([0, U64 - 1, U64 - 2, 2 ** 63 + 5, 1], dtype=np.uint64)
    pmap = np.array([0, U64 - 1, 2 ** 53 + 1, 2 ** 53, 7, U64 - 3], dtype=np.uint64)
    add("uint64_huge_ids", gmap[g], pmap[p],
        "ids near 2^64-1 and around 2^53 (distinct in u64, equal as f64)", "uint64")
    add("uint64_huge_ids_identical", gmap[g], gmap[g], "huge ids, identical", "uint64")
    add("slice_1x16x16", rint(0, 6, (1, 16, 16)), rint(1, 6, (1, 16, 16)), "2-D slice")
    add("nonconsecutive_ids", np.array([7, 1000, 65535, 70000, 4000000000])[rint(0, 4, (3, 5, 7))],
        np.array([0, 3, 70000, 123456789])[rint(0, 3, (3, 5, 7))], "sparse ids above u16")
    add("many_labels_random", rint(1, 200, (10, 10, 10)), rint(1, 200, (10, 10, 10)),
        "~200 labels each, near independence")
    g = rint(1, 3, (5, 6, 7))
    p = g.copy()
    flip = rng.random(g.shape) < 0.1
    p[flip] = rint(1, 3, g.shape)[flip]
    add("gt_pred_10pct_noise", g, p, "pred = gt with 10% of voxels relabelled at random")
    return cases


def make_voxel_fixture():
    out = []
    for name, gt, pred, note, dtype in voxel_case_list():
        exact, ref = ref_voxel_metrics(gt, pred)
        fl = funlib_voxel(gt, pred)
        relabel = max(int(gt.max()), int(pred.max())) > 2 ** 24
        sk = skimage_metrics(*(relabel_consecutive(gt, pred) if relabel else (gt, pred)))
        if relabel:  # funlib on small ids must give the same numbers
            fl_small = funlib_voxel(*relabel_consecutive(gt, pred))
            for k in ("voi_split", "voi_merge", "rand_split", "rand_merge", "nid"):
                assert close(fl[k], fl_small[k], abs_=1e-12), (name, k)
        for k in ("voi_split", "voi_merge", "rand_split", "rand_merge", "nvi_split", "nvi_merge", "nid"):
            assert close(fl[k], ref[k], abs_=1e-12, rel=1e-12), (name, k, fl[k], ref[k])
        are = sk["adapted_rand_error"]
        assert close(are["error"], ref["are_skimage"], abs_=1e-12), (name, are, ref)
        assert close(are["precision"], ref["are_skimage_precision"], abs_=1e-12), name
        assert close(are["recall"], ref["are_skimage_recall"], abs_=1e-12), name
        vi0 = sk["variation_of_information"]["ignore_labels_0"]
        if exact["n"]:
            assert close(vi0["split"], ref["voi_split"], abs_=1e-12), (name, vi0, ref)
            assert close(vi0["merge"], ref["voi_merge"], abs_=1e-12), (name, vi0, ref)
        out.append({
            "name": name, "note": note, "dtype": dtype, "shape": list(gt.shape),
            "gt": [int(v) for v in gt.ravel()], "pred": [int(v) for v in pred.ravel()],
            "exact": exact, "ref_f64": ref, "funlib_rand_voi": fl, "skimage": sk,
            "skimage_relabelled": relabel,
        })
    return out


# ============================================================================ skeleton metrics

class CaseBuilder:
    """A prediction volume plus skeleton nodes placed on chosen voxels with chosen pred ids.

    Voxels without a node hold distractor ids (900..949) that no node uses, so a wrong
    lookup (e.g. swapped axes) shows up.
    """

    def __init__(self, shape, voxel_size, rng, dtype="uint32", node_id_start=100, node_id_step=3):
        self.rng = rng
        self.shape = tuple(shape)
        self.voxel_size = [float(v) for v in voxel_size]
        self.dtype = dtype
        self.pred = rng.integers(900, 950, size=self.shape).astype(np.uint64)
        self.fixed = {}
        self.nodes, self.edges = [], []
        self.next_id, self.step = node_id_start, node_id_step

    def node(self, skeleton, pos, pred, nm=None):
        pos = tuple(int(p) for p in pos)
        assert all(0 <= p < s for p, s in zip(pos, self.shape)), pos
        if pos in self.fixed:
            assert self.fixed[pos] == pred, (pos, self.fixed[pos], pred)
        self.fixed[pos] = pred
        self.pred[pos] = pred
        nid = self.next_id
        self.next_id += self.step
        if nm is None:
            nm = [p * v for p, v in zip(pos, self.voxel_size)]
        self.nodes.append({"id": nid, "skeleton": skeleton, "position": list(pos),
                           "position_nm": [float(x) for x in nm]})
        return nid

    def chain(self, skeleton, preds, z, y0=0, width=None, connect=True):
        """Nodes along a boustrophedon path in plane z starting at row y0 (adjacent voxels)."""
        width = width or self.shape[2]
        ids = []
        for i, p in enumerate(preds):
            row, col = divmod(i, width)
            x = col if row % 2 == 0 else width - 1 - col
            ids.append(self.node(skeleton, (z, y0 + row, x), p))
        if connect:
            self.edges.extend([a, b] for a, b in zip(ids, ids[1:]))
        return ids

    def path(self, skeleton, positions, preds):
        ids = [self.node(skeleton, pos, p) for pos, p in zip(positions, preds)]
        self.edges.extend([a, b] for a, b in zip(ids, ids[1:]))
        return ids

    def build(self, name, note):
        return {"name": name, "note": note, "voxel_size": self.voxel_size,
                "pred": self.pred.astype(self.dtype), "skeletons": {"nodes": self.nodes,
                                                                     "edges": self.edges}}


def erl_case_list():
    rng = np.random.default_rng(7)
    cases = []

    # -- hand case e1 (crates/em-metrics/tests/fixtures/shared/e1_hand_skeleton.json), our format
    e1 = [  # node, skeleton, (z, y, x), pred
        (100, 1, (1, 0, 0), 7), (101, 1, (1, 0, 1), 7), (102, 1, (1, 0, 2), 7),
        (103, 1, (1, 0, 3), 8), (104, 1, (1, 0, 4), 8), (105, 1, (1, 0, 5), 8),
        (106, 2, (2, 0, 0), 9), (107, 2, (2, 0, 1), 9), (108, 2, (2, 0, 2), 9),
        (109, 2, (2, 0, 3), 9), (110, 3, (3, 0, 0), 9), (111, 3, (3, 0, 1), 0),
        (112, 3, (3, 0, 2), 5), (113, 4, (4, 0, 0), 11), (114, 4, (4, 0, 1), 11),
        (115, 4, (4, 0, 2), 11), (116, 4, (4, 0, 3), 11), (117, 4, (4, 0, 4), 11)]
    b = CaseBuilder((5, 1, 6), (40, 10, 10), rng)
    for nid, s, pos, p in e1:
        b.next_id = nid
        b.node(s, pos, p)
    for chain in ([100, 101, 102, 103, 104, 105], [106, 107, 108, 109], [110, 111, 112],
                  [113, 114, 115, 116, 117]):
        b.edges.extend([u, v] for u, v in zip(chain, chain[1:]))
    cases.append(b.build("e1_hand", "shared hand case: ERL 120/7, max ERL 270/7, NERL 4/9"))

    # -- perfect prediction, one skeleton branched
    b = CaseBuilder((3, 4, 12), (30, 6, 6), rng)
    b.chain(1, [41] * 12, z=0)
    ids = b.chain(2, [42] * 20, z=1)
    br = b.path(2, [(2, 0, x) for x in range(5)], [42] * 5)
    b.edges.append([ids[3], br[0]])  # branch: node (1,0,3) -> (2,0,0)
    b.chain(3, [43] * 7, z=2, y0=2)
    cases.append(b.build("perfect", "pred == one segment per skeleton (ids unrelated): NERL 1; "
                                     "skeleton 2 branches"))

    b = CaseBuilder((2, 2, 20), (10, 10, 10), rng)
    b.chain(1, [10] * 8 + [11] * 12, z=0)
    b.chain(2, [12] * 15, z=1)
    cases.append(b.build("split_once", "skeleton 1 split once (10 | 11)"))

    b = CaseBuilder((1, 3, 10), (10, 10, 10), rng)
    b.chain(1, [5] * 10 + [6] * 10 + [5] * 10, z=0)
    cases.append(b.build("split_reentry_aba", "segments A-B-A along one skeleton: funlib sums both "
                                              "A runs into one (c = 18 edges), not two runs"))

    b = CaseBuilder((3, 2, 16), (20, 5, 5), rng)
    b.chain(1, [7] * 10 + [9] * 12, z=0)
    b.chain(2, [7] * 16, z=1)
    b.chain(3, [8] * 9, z=2)
    cases.append(b.build("merge_two", "skeletons 1 and 2 share segment 7 (merger); 1 keeps its "
                                      "run in 9; 3 correct"))

    b = CaseBuilder((2, 2, 12), (10, 10, 10), rng)
    b.chain(1, [3] * 5 + [0] * 3 + [3] * 6, z=0)
    b.chain(2, [4] * 7 + [0] * 2, z=1)
    cases.append(b.build("merge_via_background",
                         "both skeletons have nodes in pred 0: segment 0 'merges' them "
                         "(n_mergers 2, n_non0_mergers 0); edges touching 0 are omitted"))

    b = CaseBuilder((2, 1, 10), (10, 10, 10), rng)
    b.chain(1, [0] * 10, z=0)
    b.chain(2, [0] * 6, z=1)
    cases.append(b.build("all_omitted", "every node in pred 0: ERL 0, NERL 0"))

    b = CaseBuilder((3, 2, 15), (10, 10, 10), rng)
    b.chain(1, [3] * 15, z=0)
    b.node(2, (1, 0, 0), 3)           # single node inside skeleton 1's segment
    b.node(3, (1, 0, 5), 0)           # single node in background
    b.node(4, (2, 1, 2), 12)          # single node in its own segment
    b.chain(5, [13] * 6, z=2)
    cases.append(b.build("single_node_skeletons",
                         "edge-less skeletons count for mergers (skeleton 2's one node merges "
                         "segment 3) but have no length; adapted k >= 1 drops that pair"))

    b = CaseBuilder((3, 4, 10), (10, 10, 10), rng)
    b.chain(1, [4] * 10, z=0)
    b.chain(1, [4] * 7, z=0, y0=2)            # second component, same skeleton and segment
    b.chain(2, [14] * 6, z=1)
    b.chain(2, [15] * 8, z=1, y0=2)           # second component in another segment
    b.chain(3, [16] * 5, z=2)
    b.chain(3, [0] * 4, z=2, y0=2)
    cases.append(b.build("multi_component", "skeletons with two connected components: "
                                            "same-segment components add up (c = 9 + 6)"))

    # -- adapted NERL thresholds: intruders of 5, 6, 20, 21, 100, 101 nodes
    b = CaseBuilder((6, 6, 32), (20, 8, 8), rng)
    intr = [5, 6, 20, 21, 101]
    own = [22, 22, 22, 22, 102]
    b.chain(1, sum(([100 + i] * n for i, n in enumerate(own)), []), z=0)
    for i, c in enumerate(intr):
        b.chain(2 + i, [100 + i] * c + [200 + i] * 2, z=1 + i)
    for n in b.nodes:
        del n["position_nm"]
    cases.append(b.build("adapted_thresholds",
                         "skeleton 1 runs through segments 100..104 (22, 22, 22, 22, 102 "
                         "nodes); skeleton 2+i enters segment 100+i with 5/6/20/21/101 nodes "
                         "(then 2 nodes in 200+i): a pair is kept only when its node count > k. "
                         "No position_nm"))

    # -- BANIS's merged-skeleton rule after dropping pairs
    b = CaseBuilder((5, 1, 16), (10, 10, 10), rng)
    b.chain(1, [50] * 12, z=0)
    b.chain(2, [50] * 12, z=1)
    b.chain(3, [60] * 8 + [50] * 3, z=2)
    b.chain(4, [70] * 9 + [50] * 3, z=3)
    b.chain(5, [70] * 12, z=4)
    cases.append(b.build("adapted_merged_skeleton_rule",
                         "k=5: 1+2 merge in 50, 4+5 merge in 70. Skeleton 3's 3-node pair in "
                         "50 is dropped, 3 is not a merged skeleton, so its 2 edges in 50 stay "
                         "correct (em_erl would exclude them). Skeleton 4's 3-node pair in 50 "
                         "is dropped too, but 4 is merged (via 70) and 50 is merging, so its "
                         "edges in 50 are merged"))

    # -- no position_nm, anisotropic voxels, paths along every axis
    b = CaseBuilder((6, 6, 6), (30, 8, 4), rng)
    b.path(1, [(z, 0, 0) for z in range(6)], [1, 1, 1, 2, 2, 2])
    b.path(2, [(0, y, 2) for y in range(6)], [3] * 6)
    b.path(3, [(3, 3, x) for x in range(6)], [1, 1, 4, 4, 4, 0])
    b.path(4, [(i, 5 - i, i) for i in range(1, 5)], [5] * 4)   # diagonal steps
    for n in b.nodes:
        del n["position_nm"]
    cases.append(b.build("default_position_nm_anisotropic",
                         "nodes without position_nm: lengths from position x voxel size "
                         "(30, 8, 4); skeleton 1 and 3 share segment 1 (merger)"))

    # -- jittered nm positions (not on the voxel grid), random merges/splits
    b = CaseBuilder((4, 6, 16), (40, 16, 16), rng)
    for s in range(4):
        preds = np.repeat(rng.integers(1, 6, size=6), rng.integers(2, 8, size=6)).tolist()
        b.chain(10 + s, preds, z=s)
    for n in b.nodes:
        n["position_nm"] = [round(p * v + float(rng.uniform(-0.45, 0.45)) * v, 3)
                            for p, v in zip(n["position"], b.voxel_size)]
    cases.append(b.build("jittered_nm_random",
                         "position_nm off the grid (lengths from position_nm, lookup from "
                         "position); random runs of 5 segment ids shared between skeletons"))

    b = CaseBuilder((2, 2, 12), (10, 10, 10), rng)
    b.chain(0, [21] * 12, z=0)
    b.chain(5, [22] * 6 + [23] * 4, z=1)
    cases.append(b.build("skeleton_id_zero",
                         "funlib quirk: skeleton id 0 is 'background' in the max-ERL lookup "
                         "(its edges are omitted there, but its length stays in the total) and "
                         "in node-level rand_voi (its nodes are ignored)"))

    b = CaseBuilder((2, 1, 8), (10, 10, 10), rng)
    ids = b.chain(1, [31] * 4 + [32] * 4, z=0)
    b.chain(2, [33] * 5, z=1)
    b.edges.append([ids[1], ids[0]])   # reversed duplicate
    b.edges.append([ids[2], ids[3]])   # exact duplicate
    b.edges.append([ids[4], ids[3]])   # reversed duplicate of the split edge
    cases.append(b.build("duplicate_edges", "edges listed twice (also reversed): funlib's "
                                            "networkx Graph keeps one edge per node pair"))

    # -- random tubes: skeleton = rounded centreline, pred = perturbed GT
    for name, seed, shape, vs, n_tubes, huge in (
            ("tubes_random_a", 11, (10, 16, 16), (30, 8, 8), 6, False),
            ("tubes_random_b", 12, (12, 14, 14), (8, 8, 8), 6, False),
            ("tubes_random_uint64", 13, (8, 12, 12), (40, 10, 10), 5, True)):
        trng = np.random.default_rng(seed)
        gt, lines = random_tubes(shape, n_tubes, trng, length=(15, 35), radius=(1.0, 2.0))
        pred = perturb_segmentation(gt, trng, n_splits=4, n_merges=1, n_erase=2, erase_radius=2)
        b = CaseBuilder(shape, vs, trng, dtype="uint64" if huge else "uint32")
        b.pred = pred
        for i, line in enumerate(lines):
            vox = np.rint(line).astype(np.int64)
            keep = np.ones(len(vox), bool)
            keep[1:] = np.any(vox[1:] != vox[:-1], axis=1)
            vox = vox[keep]
            b.path(i + 1, [tuple(v) for v in vox], [int(pred[tuple(v)]) for v in vox])
        for n in b.nodes:  # default position_nm (= position x voxel size)
            del n["position_nm"]
        note = ("random tubes; skeleton = rounded centreline (nodes may sit in other tubes); "
                "no position_nm")
        if huge:
            nz = b.pred != 0
            b.pred[nz] = np.uint64(U64 - 2 ** 20) + b.pred[nz]
            note += ("; pred ids shifted to 2^64 - 2^20 + id (uint64): funlib/BANIS turn "
                     "(skeleton, segment) pairs into float64 and lose such ids; expected "
                     "numbers come from the same volume relabelled to small ids "
                     "(all metrics are invariant under relabelling)")
        cases.append(b.build(name, note))
    return cases


def dedup_edges(edges):
    seen, out = set(), []
    for u, v in edges:
        key = (min(u, v), max(u, v))
        if key not in seen:
            seen.add(key)
            out.append((u, v))
    return out


def node_nm(node, voxel_size):
    nm = node.get("position_nm")
    if nm is None:
        nm = [p * v for p, v in zip(node["position"], voxel_size)]
    return [float(x) for x in nm]


def ref_erl(skel, lut, voxel_size, k=0):
    """Independent float64 ERL with funlib/BANIS semantics; k = BANIS ignored_merger_size."""
    skel_of = {n["id"]: n["skeleton"] for n in skel["nodes"]}
    nm = {n["id"]: node_nm(n, voxel_size) for n in skel["nodes"]}
    edges = dedup_edges(skel["edges"])
    edge_len = {}
    lengths = defaultdict(list)
    for u, v in edges:
        d = [a - b for a, b in zip(nm[u], nm[v])]
        edge_len[(u, v)] = math.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        lengths[skel_of[u]].append(edge_len[(u, v)])
    skel_len = {s: math.fsum(v) for s, v in lengths.items()}
    total = math.fsum(skel_len.values())

    counts = Counter((skel_of[n], lut[n]) for n in skel_of)
    kept = [p for p, c in counts.items() if c > k]
    seg_skels = defaultdict(set)
    for s, g in kept:
        seg_skels[g].add(s)
    merging = {g for g, ss in seg_skels.items() if len(ss) > 1}
    merged_skels = {s for s, g in kept if g in merging}

    per = defaultdict(lambda: {"omitted": 0, "split": 0, "merged": 0, "correct": 0})
    runs = defaultdict(list)
    for u, v in edges:
        s, gu, gv = skel_of[u], lut[u], lut[v]
        if gu == 0 or gv == 0:
            per[s]["omitted"] += 1
        elif gu != gv:
            per[s]["split"] += 1
        elif s in merged_skels and gu in merging:
            per[s]["merged"] += 1
        else:
            per[s]["correct"] += 1
            runs[(s, gu)].append(edge_len[(u, v)])
    run_len = {key: math.fsum(v) for key, v in runs.items()}
    erl = ratio(math.fsum(c * c for c in run_len.values()), total)
    counts_total = {key: sum(p[key] for p in per.values())
                    for key in ("omitted", "split", "merged", "correct")}
    return {
        "erl": erl,
        "total_length": total,
        "skeleton_lengths": [[s, skel_len[s]] for s in sorted(skel_len)],
        "edge_counts": counts_total,
        "per_skeleton_edge_counts": [[s, per[s]] for s in sorted(per)],
        "correct_runs": [[s, g, run_len[(s, g)]] for s, g in sorted(run_len)],
        "merging_segments": sorted(merging),
        "merged_skeletons": sorted(merged_skels),
        "n_mergers": sum(len(seg_skels[g]) for g in merging),
        "n_non0_mergers": sum(len(seg_skels[g]) for g in merging if g != 0),
    }


def node_lut(skel, pred):
    return {n["id"]: int(pred[tuple(n["position"])]) for n in skel["nodes"]}


def ref_skeleton_metrics(skel, lut, voxel_size):
    base = ref_erl(skel, lut, voxel_size)
    gt_lut = {n["id"]: n["skeleton"] for n in skel["nodes"]}
    mx = ref_erl(skel, gt_lut, voxel_size)
    out = dict(base)
    out["max_erl"] = mx["erl"]
    out["nerl"] = ratio(base["erl"], mx["erl"])
    out["n_splits"] = base["edge_counts"]["split"]
    out["adapted"] = {}
    for k in ADAPTED_KS:
        a = ref_erl(skel, lut, voxel_size, k)
        out["adapted"][K_NAMES[k]] = {
            "erl": a["erl"], "nerl": ratio(a["erl"], mx["erl"]), "edge_counts": a["edge_counts"],
            "merging_segments": a["merging_segments"], "merged_skeletons": a["merged_skeletons"]}
    return out


def banis_skeleton_metrics(banis, skel, pred, voxel_size):
    """BANIS compute_metrics on the case (via a pickle, as BANIS reads it) + edge counts."""
    from funlib.evaluate import evaluate_skeletons

    g = skeleton_json_to_graph(skel, voxel_size)
    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
        pickle.dump(g, f)
    try:
        with _quiet():
            m = banis.compute_metrics(pred, f.name)
    finally:
        os.unlink(f.name)
    m = _to_builtin(m)
    m["node_rand_voi"] = {k: v for k, v in m.pop("voi_report").items()
                          if k not in ("voi_split_i", "voi_merge_j")}
    lut = {n: pred[tuple(d["index_position"])] for n, d in g.nodes(data=True)}

    def tally(scores):
        c = {"omitted": 0, "split": 0, "merged": 0, "correct": 0}
        for s in scores.values():
            c["omitted"] += s.ommitted
            c["split"] += s.split
            c["merged"] += s.merged
            c["correct"] += s.correct
        return c

    m["edge_counts"] = tally(evaluate_skeletons(g, "id", lut))
    m["adapted_edge_counts"] = {
        K_NAMES[k]: tally(banis.evaluate_skeletons(g, "id", lut, ignored_merger_size=k))
        for k in ADAPTED_KS}
    return m


def load_em_erl(root):
    root = Path(root or os.environ.get("EM_ERL_ROOT", "/tmp/em_erl"))
    if not (root / "em_erl" / "eval.py").is_file():
        return None
    sys.path.insert(0, str(root))
    return importlib.import_module("em_erl")


def em_erl_metrics(em_erl, skel, lut, voxel_size):
    """em_erl: skel_to_erlgraph (skeletons in nm; edge-less skeletons are dropped there),
    compute_erl_score for a few merge_thresholds. NERL = ERL / GT ERL."""
    by_skel = defaultdict(list)
    for n in skel["nodes"]:
        by_skel[n["skeleton"]].append(n)
    skel_of = {n["id"]: n["skeleton"] for n in skel["nodes"]}
    edges_by = defaultdict(list)
    for u, v in dedup_edges(skel["edges"]):
        edges_by[skel_of[u]].append((u, v))
    objs = {}
    for s in sorted(by_skel):
        idx = {n["id"]: i for i, n in enumerate(by_skel[s])}
        verts = np.array([node_nm(n, voxel_size) for n in by_skel[s]], dtype=np.float64)
        e = np.array([[idx[u], idx[v]] for u, v in edges_by[s]], dtype=np.int64).reshape(-1, 2)
        objs[s] = types.SimpleNamespace(vertices=verts, edges=e)
    graph = em_erl.skel_to_erlgraph(objs)
    kept = [s for s in sorted(by_skel) if len(edges_by[s])]
    lut_arr = np.array([lut[n["id"]] for s in kept for n in by_skel[s]], dtype=np.uint64)
    out = {}
    for t in EM_ERL_THRESHOLDS:
        with _quiet():
            sc = em_erl.compute_erl_score(graph, lut_arr, None, t)
            sc.compute_erl()
        erl, gt_erl = float(sc.erl[0]), float(sc.erl[1])
        out[str(t)] = {"erl": erl, "max_erl": gt_erl, "nerl": ratio(erl, gt_erl)}
    return out


def make_erl_fixture(banis, em_erl):
    out = []
    for case in erl_case_list():
        skel, pred, vs = case["skeletons"], case["pred"], case["voxel_size"]
        lut = node_lut(skel, pred)
        relabel = int(pred.max()) > 2 ** 32
        pred_eval = relabel_consecutive(pred)[0] if relabel else pred
        lut_eval = node_lut(skel, pred_eval)
        ref = ref_skeleton_metrics(skel, lut_eval, vs)
        if relabel:  # report segment ids as in the stored volume
            back = {lut_eval[n]: lut[n] for n in lut}
            ref["merging_segments"] = sorted(back[g] for g in ref["merging_segments"])
            ref["correct_runs"] = [[s, back[g], c] for s, g, c in ref["correct_runs"]]
            for a in ref["adapted"].values():
                a["merging_segments"] = sorted(back[g] for g in a["merging_segments"])
        fb = banis_skeleton_metrics(banis, skel, pred_eval, vs)
        # cross-checks: funlib/BANIS (float32 ERL) against the float64 reference
        for key in ("erl", "max_erl", "nerl"):
            assert close(fb[key], ref[key], rel=2e-5, abs_=1e-9), (case["name"], key, fb[key], ref[key])
        for key in ("n_mergers", "n_non0_mergers", "n_splits"):
            assert fb[key] == ref[key], (case["name"], key, fb[key], ref[key])
        assert fb["edge_counts"] == ref["edge_counts"], (case["name"], fb["edge_counts"], ref["edge_counts"])
        for k, name in K_NAMES.items():
            assert close(fb[f"nerl_{name}"], ref["adapted"][name]["nerl"], rel=2e-5, abs_=1e-9), \
                (case["name"], k, fb[f"nerl_{name}"], ref["adapted"][name]["nerl"])
            assert fb["adapted_edge_counts"][name] == ref["adapted"][name]["edge_counts"], (case["name"], k)
        node_ids = np.array([n["skeleton"] for n in skel["nodes"]], dtype=np.uint64)
        node_pred = np.array([lut_eval[n["id"]] for n in skel["nodes"]], dtype=np.uint64)
        _, node_ref = ref_voxel_metrics(node_ids[None, None, :], node_pred[None, None, :])
        for key, v in fb["node_rand_voi"].items():
            assert close(v, node_ref[key], abs_=1e-12, rel=1e-12), (case["name"], key)

        entry = {
            "name": case["name"], "note": case["note"], "voxel_size": vs,
            "pred": {"dtype": str(pred.dtype), "shape": list(pred.shape),
                     "data": [int(v) for v in pred.ravel()]},
            "skeletons": skel,
            "node_pred": [lut[n["id"]] for n in skel["nodes"]],
            "relabelled_for_reference": relabel,
            "funlib_banis": fb,
            "ref_f64": ref,
        }
        if relabel:
            raw = banis_skeleton_metrics(banis, skel, pred, vs)
            entry["funlib_banis_raw_uint64"] = {
                k: raw[k] for k in ("erl", "max_erl", "nerl", "n_mergers", "n_non0_mergers",
                                    "n_splits", "edge_counts")}
        if em_erl is not None:
            entry["em_erl"] = em_erl_metrics(em_erl, skel, lut_eval, vs)
        out.append(entry)
    return out


def versions():
    import networkx
    import scipy
    import skimage
    return {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-image": skimage.__version__, "networkx": networkx.__version__,
            "funlib.evaluate": f"github funkelab/funlib.evaluate {FUNLIB_COMMIT}",
            "banis": f"github jasonkena/banis {BANIS_COMMIT} metrics.py",
            "em_erl": f"github PytorchConnectomics/em_erl {EM_ERL_COMMIT}"}


VOXEL_README = (
    "Voxel cases. gt/pred: flat C-order lists of `shape` (Z,Y,X), label type `dtype`. "
    "exact: integer sums over voxels with gt != 0 (n, sum_nij2 = sum n_ij^2, sum_a2 = sum over "
    "GT ids of a_i^2, sum_b2 = sum over pred ids of b_j^2 restricted to gt != 0, label and "
    "cell counts). ref_f64: independent float64 (log2; voi_split = H(pred|gt), voi_merge = "
    "H(gt|pred), rand_split = sum_nij2/sum_a2, rand_merge = sum_nij2/sum_b2, arand = 1 - "
    "2 sum_nij2/(sum_a2+sum_b2), nvi_* = voi_*/H_joint, nid = 1 - (H_gt+H_pred-H_joint)/"
    "max(H_gt,H_pred); are_skimage* = scikit-image adapted_rand_error without self-pairs). "
    "funlib_rand_voi: funlib.evaluate.rand_voi(gt, pred, return_cluster_scores=True) "
    "(voi_split_i / voi_merge_j as [id, value] lists). skimage: adapted_rand_error(gt, pred) "
    "(ignore_labels=(0,)) and variation_of_information(gt, pred) with ignore_labels () and "
    "[0], as {split: result[0] = H(pred|gt), merge: result[1] = H(gt|pred)}; computed on "
    "consecutively relabelled volumes when skimage_relabelled (huge ids). Non-finite values "
    "are the strings NaN / Infinity.")

ERL_README = (
    "Skeleton cases. skeletons: our skeleton JSON (node id, skeleton id, position = voxel "
    "index into pred (Z,Y,X), position_nm optional -> position x voxel_size). pred: inline "
    "volume (flat C-order). node_pred: pred id of each node (order of skeletons.nodes). "
    "funlib_banis: BANIS metrics.compute_metrics (funlib expected_run_length underneath, "
    "float32 ERL): erl, max_erl, nerl, n_mergers ((skeleton, segment) pairs in merging "
    "segments incl. segment 0), n_non0_mergers, n_splits (split edges), voi_split / voi_merge / "
    "voi_sum and node_rand_voi (funlib rand_voi over nodes: gt = skeleton id, pred = node "
    "pred), nerl_5 / nerl_20 / nerl_100 / nerl_inf (BANIS adapted_erl / max_erl), edge_counts "
    "(funlib evaluate_skeletons) and adapted_edge_counts (BANIS evaluate_skeletons). ref_f64: "
    "independent float64 with the same semantics plus per-skeleton details (skeleton_lengths, "
    "correct_runs = [skeleton, segment, summed correct length], merging_segments, "
    "merged_skeletons, adapted[k]). em_erl (if present): em_erl compute_erl_score for "
    "merge_threshold t (pairs with >= t nodes kept; t = k + 1 is BANIS's k up to the "
    "merged-skeleton rule). When relabelled_for_reference, funlib_banis/ref_f64 were computed "
    "on the volume relabelled to small ids (segment ids in ref_f64 mapped back) and "
    "funlib_banis_raw_uint64 holds funlib/BANIS on the raw uint64 ids.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--banis", default=None, help="folder with BANIS metrics.py ($BANIS_ROOT, /tmp/banis)")
    ap.add_argument("--em-erl", default=None, help="em_erl source tree ($EM_ERL_ROOT, /tmp/em_erl)")
    args = ap.parse_args()

    banis = load_banis_metrics(args.banis)
    if banis is None:
        sys.exit("BANIS metrics.py not found: pass --banis DIR or set BANIS_ROOT (see header)")
    em_erl = load_em_erl(args.em_erl)
    if em_erl is None:
        print("em_erl not found: its block is left out", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    gen = {"script": "tools/make_metrics_fixtures.py", "versions": versions()}
    voxel = {"generator": gen, "readme": VOXEL_README, "cases": make_voxel_fixture()}
    erl = {"generator": gen, "readme": ERL_README,
           "adapted_k": [K_NAMES[k] for k in ADAPTED_KS],
           "em_erl_merge_thresholds": list(EM_ERL_THRESHOLDS) if em_erl else [],
           "cases": make_erl_fixture(banis, em_erl)}
    for name, obj in (("voxel_cases.json", voxel), ("erl_cases.json", erl)):
        path = args.out / name
        path.write_text(dumps(clean(obj)) + "\n")
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, {len(obj['cases'])} cases)")


if __name__ == "__main__":
    main()
