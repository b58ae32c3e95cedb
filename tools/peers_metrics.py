#!/usr/bin/env python3
"""Python peers of em-metrics, importable by benchmark and fixture scripts.

Each peer runs the reference implementation and returns ``(seconds, result)``:

* ``funlib_rand_voi(gt, pred)``: funlib.evaluate ``rand_voi`` (C++; GT 0 ignored, log2).
  The uint64 conversion it requires happens before the clock starts.
* ``skimage_arand(gt, pred)``: scikit-image ``adapted_rand_error`` (GT 0 ignored, no
  self-pairs). Ids are not remapped: skimage builds a sparse table of shape
  (max(gt)+1, max(pred)+1), so ids near 2^64 fail there (use ``relabel_consecutive``).
* ``funlib_erl(skeleton_json_path, pred_npy_path, voxel_size)``: BANIS ``compute_metrics``
  (node-level funlib rand_voi, funlib ERL and max ERL, BANIS adapted NERL for k = 5, 20,
  100, inf) on a skeleton JSON in our format (docs: shared ARCHITECTURE.md). The clock
  covers what BANIS does after the skeleton pickle exists: unpickling, per-node lookup in
  the prediction, every metric. Without a BANIS tree only the funlib part is timed.

Helpers shared with tools/make_metrics_fixtures.py: ``skeleton_json_to_graph`` (our JSON ->
the networkx graph BANIS pickles: node attributes ``id``, ``index_position``,
``nm_position``), ``load_banis_metrics``, ``random_tubes`` (a seeded label volume of
random tubes, "neurites") and ``make_skeletons`` (kimimaro skeletons of a label volume in our
skeleton JSON format).

Install (see also the header of tools/make_metrics_fixtures.py):

    pip install -r tools/requirements-fixtures.txt
    # funlib.evaluate is not on PyPI; its setup.py imports Cython and numpy, so build it
    # without build isolation (needs g++):
    git clone https://github.com/funkelab/funlib.evaluate /tmp/funlib.evaluate  # or git archive
    pip install --no-build-isolation /tmp/funlib.evaluate
    # BANIS metrics.py (github.com/jasonkena/banis, a copy of the BANIS repository):
    export BANIS_ROOT=/tmp/banis      # folder holding metrics.py

Command line (a self-check / small benchmark):

    python3 tools/peers_metrics.py [--shape 256] [--neurites 500] [--nodes 100000] [--out DIR]

makes a random-tube volume, skeletonises it with kimimaro, writes ``DIR/gt.npy``,
``DIR/pred.npy`` (GT with a few splits/merges/erasures) and ``DIR/skeletons.json``, checks
that every node lies in its own label, and times the peers on them.
"""
import argparse
import contextlib
import io
import importlib.util
import json
import math
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ADAPTED_KS = (5, 20, 100, math.inf)


# --------------------------------------------------------------------------- volume peers

def funlib_rand_voi(gt, pred, return_cluster_scores=False):
    """funlib.evaluate.rand_voi; returns (seconds, dict)."""
    from funlib.evaluate import rand_voi

    gt = np.ascontiguousarray(gt, dtype=np.uint64)
    pred = np.ascontiguousarray(pred, dtype=np.uint64)
    t0 = time.perf_counter()
    res = rand_voi(gt, pred, return_cluster_scores=return_cluster_scores)
    return time.perf_counter() - t0, res


def skimage_arand(gt, pred):
    """skimage.metrics.adapted_rand_error(gt, pred); returns (seconds, (are, prec, rec))."""
    from skimage.metrics import adapted_rand_error

    t0 = time.perf_counter()
    res = adapted_rand_error(gt, pred)
    return time.perf_counter() - t0, tuple(float(x) for x in res)


def relabel_consecutive(*volumes):
    """Map the ids of each volume to 0..K (0 stays 0, order kept); VOI/Rand are invariant."""
    out = []
    for v in volumes:
        ids, inv = np.unique(v, return_inverse=True)
        if ids[0] != 0:
            inv = inv + 1
        out.append(inv.reshape(v.shape).astype(np.uint64))
    return out


# --------------------------------------------------------------------------- skeleton peers

def load_banis_metrics(root=None):
    """Import BANIS's metrics.py from `root` (default $BANIS_ROOT, /tmp/banis); None if absent."""
    root = Path(root or os.environ.get("BANIS_ROOT", "/tmp/banis"))
    path = root / "metrics.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("banis_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def skeleton_json_to_graph(skel, voxel_size):
    """Our skeleton JSON (dict) -> networkx.Graph with BANIS's node attributes.

    `position_nm` defaults to `position` x voxel size. Edges are undirected; a repeated edge
    (either direction) is one networkx edge, as in funlib/BANIS.
    """
    import networkx as nx

    vs = np.asarray(voxel_size, dtype=np.float64)
    g = nx.Graph()
    for n in skel["nodes"]:
        pos = [int(p) for p in n["position"]]
        nm = n.get("position_nm")
        if nm is None:
            nm = (np.asarray(pos, dtype=np.float64) * vs).tolist()
        g.add_node(int(n["id"]), id=int(n["skeleton"]), index_position=pos,
                   nm_position=[float(x) for x in nm])
    g.add_edges_from((int(u), int(v)) for u, v in skel["edges"])
    return g


@contextlib.contextmanager
def _quiet():
    """Silence BANIS's print and tqdm bars."""
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def _to_builtin(x):
    if isinstance(x, dict):
        return {str(k): _to_builtin(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_builtin(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def funlib_erl(skeleton_json_path, pred_npy_path, voxel_size, banis_root=None):
    """BANIS compute_metrics (funlib underneath) on our skeleton JSON; returns (seconds, dict).

    The dict holds BANIS's metric keys (erl, max_erl, nerl, n_mergers, n_non0_mergers,
    n_splits, voi_split, voi_merge, voi_sum, voi_report, nerl_5/20/100/inf) as Python
    numbers, plus `timings` {load_s: JSON -> graph -> pickle, metrics_s: BANIS
    compute_metrics, funlib_erl_only_s: one funlib expected_run_length on precomputed
    lookups} and `n_nodes`, `n_edges`. Without BANIS (no metrics.py under banis_root /
    $BANIS_ROOT) the dict holds the funlib-only numbers and metrics_s times those.
    """
    from funlib.evaluate import expected_run_length, rand_voi

    t0 = time.perf_counter()
    with open(skeleton_json_path) as f:
        skel = json.load(f)
    g = skeleton_json_to_graph(skel, voxel_size)
    pred = np.load(pred_npy_path, mmap_mode="r")
    tmp = tempfile.NamedTemporaryFile(suffix=".pkl", delete=False)
    with tmp:
        pickle.dump(g, tmp)
    load_s = time.perf_counter() - t0

    banis = load_banis_metrics(banis_root)
    try:
        if banis is not None:
            t0 = time.perf_counter()
            with _quiet():
                res = banis.compute_metrics(pred, tmp.name)
            metrics_s = time.perf_counter() - t0
            res = _to_builtin(res)
        else:
            t0 = time.perf_counter()
            lut = {n: pred[tuple(d["index_position"])] for n, d in g.nodes(data=True)}
            ids = np.array([d["id"] for _, d in g.nodes(data=True)], dtype=np.uint64)
            vals = np.array([lut[n] for n in g.nodes()], dtype=np.uint64)
            voi = rand_voi(ids, vals)
            erl = expected_run_length(g, "id", "edge_length", lut,
                                      skeleton_position_attributes=["nm_position"])
            max_erl = expected_run_length(g, "id", "edge_length",
                                          {n: d["id"] for n, d in g.nodes(data=True)},
                                          skeleton_position_attributes=["nm_position"])
            metrics_s = time.perf_counter() - t0
            res = _to_builtin({"erl": erl, "max_erl": max_erl, "nerl": erl / max_erl,
                               "voi_split": voi["voi_split"], "voi_merge": voi["voi_merge"],
                               "voi_sum": voi["voi_split"] + voi["voi_merge"], "voi_report": voi})
    finally:
        os.unlink(tmp.name)

    lut = {n: pred[tuple(d["index_position"])] for n, d in g.nodes(data=True)}
    t0 = time.perf_counter()
    expected_run_length(g, "id", "edge_length", lut, skeleton_position_attributes=["nm_position"])
    erl_only_s = time.perf_counter() - t0

    res["timings"] = {"load_s": load_s, "metrics_s": metrics_s, "funlib_erl_only_s": erl_only_s}
    res["n_nodes"] = g.number_of_nodes()
    res["n_edges"] = g.number_of_edges()
    res["banis"] = banis is not None
    return metrics_s, res


# --------------------------------------------------------------------------- synthetic data

def _ball_offsets(radius):
    r = int(math.ceil(radius))
    zz, yy, xx = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1]
    keep = zz * zz + yy * yy + xx * xx <= radius * radius
    return np.stack([zz[keep], yy[keep], xx[keep]], axis=1)


def random_tubes(shape, n_tubes, rng, length=(150, 400), radius=(1.5, 3.5), dtype=np.uint32):
    """Label volume of `n_tubes` random tubes ("neurites"), ids 1..n_tubes in drawing order.

    Each tube is a persistent random walk (unit steps, direction jittered by N(0, 0.15) per
    step, reflected at the borders) painted with a ball of a random radius. Later tubes
    overwrite earlier ones where they cross. Returns (labels, centerlines): centerlines[i] is
    a float64 (n, 3) array of the walk of label i+1, in voxels.
    """
    shape = np.asarray(shape)
    labels = np.zeros(tuple(shape), dtype=dtype)
    centerlines = []
    hi = shape - 1
    for label in range(1, n_tubes + 1):
        n = int(rng.integers(length[0], length[1] + 1))
        pos = rng.uniform(0, hi)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        pts = np.empty((n, 3))
        for i in range(n):
            pts[i] = pos
            d = d + rng.normal(scale=0.15, size=3)
            d /= np.linalg.norm(d)
            nxt = pos + d
            for ax in range(3):
                if nxt[ax] < 0 or nxt[ax] > hi[ax]:
                    d[ax] = -d[ax]
            pos = np.clip(pos + d, 0, hi)
        centerlines.append(pts)
        r = float(rng.uniform(*radius))
        vox = np.unique(np.rint(pts).astype(np.int64), axis=0)
        stamp = (vox[:, None, :] + _ball_offsets(r)[None, :, :]).reshape(-1, 3)
        inside = np.all((stamp >= 0) & (stamp < shape), axis=1)
        stamp = stamp[inside]
        labels[stamp[:, 0], stamp[:, 1], stamp[:, 2]] = label
    return labels, centerlines


def perturb_segmentation(labels, rng, n_splits=10, n_merges=5, n_erase=5, erase_radius=4):
    """A plausible "prediction": GT with false splits (a half-space of a label gets a new id),
    false merges (one label takes another's id) and erased balls (set to 0)."""
    pred = labels.astype(np.uint64).copy()
    ids = np.unique(labels)
    ids = ids[ids != 0]
    next_id = int(ids.max()) + 1 if ids.size else 1
    if ids.size == 0:
        return pred
    for _ in range(n_splits):
        lab = int(rng.choice(ids))
        vox = np.argwhere(pred == lab)
        if len(vox) < 2:
            continue
        c = vox[int(rng.integers(len(vox)))]
        normal = rng.normal(size=3)
        side = (vox - c) @ normal > 0
        pred[tuple(vox[side].T)] = next_id
        next_id += 1
    for _ in range(n_merges):
        a, b = (int(x) for x in rng.choice(ids, size=2, replace=False)) if ids.size > 1 else (0, 0)
        if a:
            pred[pred == b] = a
    offs = _ball_offsets(erase_radius)
    for _ in range(n_erase):
        c = rng.integers(0, np.asarray(labels.shape))
        p = c + offs
        p = p[np.all((p >= 0) & (p < np.asarray(labels.shape)), axis=1)]
        pred[tuple(p.T)] = 0
    return pred


def make_skeletons(labels, n_nodes_target=None, voxel_size=(1.0, 1.0, 1.0), parallel=0,
                   dust_threshold=50, teasar_params=None):
    """Skeletonise a label volume with kimimaro into our skeleton JSON (a dict).

    Node `position` is the voxel index (array axis order) of the kimimaro vertex, which lies
    on a voxel of its own label; `position_nm` = position x voxel_size (kimimaro's vertex in
    physical units); `skeleton` = the label id. Node ids run 0..N-1 over skeletons in
    ascending label order. kimimaro puts roughly one vertex per voxel of path length; when
    `n_nodes_target` is given and the skeletons have more than 1.5x that many vertices, each
    skeleton is downsampled (osteoid `Skeleton.downsample`, which keeps branch points and
    ends) by the factor that brings the total near the target.
    """
    import kimimaro

    vs = tuple(float(v) for v in voxel_size)
    params = {"scale": 1.5, "const": 2.0 * max(vs), "pdrf_scale": 100000, "pdrf_exponent": 4,
              "soma_acceptance_threshold": 1e9, "soma_detection_threshold": 1e9,
              "soma_invalidation_const": 0, "soma_invalidation_scale": 1}
    if teasar_params:
        params.update(teasar_params)
    with _quiet():
        skels = kimimaro.skeletonize(np.asarray(labels), teasar_params=params, anisotropy=vs,
                                     dust_threshold=dust_threshold, progress=False,
                                     parallel=parallel, fix_branching=True, fix_borders=True)
    total = sum(len(s.vertices) for s in skels.values())
    factor = 1
    if n_nodes_target and total > 1.5 * n_nodes_target:
        factor = int(round(total / n_nodes_target))
    nodes, edges = [], []
    vs_arr = np.asarray(vs)
    shape = np.asarray(labels.shape)
    for label in sorted(skels):
        s = skels[label]
        if factor > 1:
            s = s.downsample(factor)
        if len(s.vertices) == 0:
            continue
        pos = np.clip(np.rint(s.vertices / vs_arr).astype(np.int64), 0, shape - 1)
        base = len(nodes)
        for i, p in enumerate(pos):
            nodes.append({"id": base + i, "skeleton": int(label), "position": p.tolist(),
                          "position_nm": (p * vs_arr).tolist()})
        edges.extend([[base + int(u), base + int(v)] for u, v in s.edges])
    return {"nodes": nodes, "edges": edges}


# --------------------------------------------------------------------------- self-check

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, default=256)
    ap.add_argument("--neurites", type=int, default=500)
    ap.add_argument("--nodes", type=int, default=100_000, help="n_nodes_target")
    ap.add_argument("--voxel-size", default="1,1,1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/em_metrics_peers")
    args = ap.parse_args()
    vs = tuple(float(x) for x in args.voxel_size.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    gt, _ = random_tubes((args.shape,) * 3, args.neurites, rng)
    print(f"tubes: {time.perf_counter() - t0:.1f} s, {len(np.unique(gt)) - 1} labels, "
          f"{np.count_nonzero(gt) / gt.size:.1%} foreground")
    pred = perturb_segmentation(gt, rng, n_splits=50, n_merges=20, n_erase=20)
    t0 = time.perf_counter()
    skel = make_skeletons(gt, args.nodes, voxel_size=vs)
    print(f"kimimaro: {time.perf_counter() - t0:.1f} s, {len(skel['nodes'])} nodes, "
          f"{len(skel['edges'])} edges, {len({n['skeleton'] for n in skel['nodes']})} skeletons")
    bad = sum(gt[tuple(n["position"])] != n["skeleton"] for n in skel["nodes"])
    print(f"nodes outside their own label: {bad}")
    np.save(out / "gt.npy", gt)
    np.save(out / "pred.npy", pred)
    with open(out / "skeletons.json", "w") as f:
        json.dump(skel, f)

    s, r = funlib_rand_voi(gt, pred)
    print(f"funlib rand_voi: {s:.3f} s  voi_split {r['voi_split']:.4f} voi_merge {r['voi_merge']:.4f}")
    s, r = skimage_arand(gt, pred)
    print(f"skimage adapted_rand_error: {s:.3f} s  {r}")
    s, r = funlib_erl(out / "skeletons.json", out / "pred.npy", vs)
    print(f"BANIS compute_metrics: {s:.3f} s (banis={r['banis']}) timings {r['timings']}")
    print({k: r[k] for k in r if k.startswith(("erl", "max_erl", "nerl", "n_"))})
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
