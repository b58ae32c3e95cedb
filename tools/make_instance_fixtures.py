#!/usr/bin/env python3
"""Reference fixtures for em-decode's instance decoders (`crates/em-decode/src/instances/`).

Every expected output is computed by PyTorch Connectomics' (PyTC) own decoder functions,
loaded standalone from a git checkout (no torch needed; only numpy, scipy, scikit-image,
connected-components-3d, fastremap and mahotas):

  * PyTC master  (PYTC_MASTER):  connectomics/decoding/segmentation.py
      decode_binary_watershed, decode_binary_contour_watershed,
      decode_binary_contour_distance_watershed — mahotas.cwatershed without mask, then the
      background zeroed                                            -> flood = "unmasked"
  * PyTC v2.0 branch (PYTC_V2): the same three functions, which call
      mahotas.cwatershed(surface, seeds, mask=foreground); released mahotas has no `mask`,
      so the call is routed to skimage.segmentation.watershed(surface, seeds,
      mask=foreground), the function PyTC's docstrings name        -> flood = "masked"
  * PyTC v1.0.0 (PYTC_V1):      connectomics/utils/process.py
      binary_watershed, bc_watershed (skimage watershed with mask, unmodified)
                                                                   -> flood = "masked"

Each case is a small synthetic volume (touching ellipsoids, mitochondria-like tubes, a
coarsely quantised plateau case, a handmade basin between two equal seeds) with smooth predicted foreground / contour / signed
distance maps plus noise. The maps are made as uint8 (as PyTC stores predictions); the
Rust inputs are the float32 maps `u8 / 255` (distance `u8 / 255 * 2 - 1`), which is also
what PyTC's float path (`prediction_scale=1`) receives. PyTC's uint8 path compares
`u8 > int(255 t)`; its runs give the Rust decoder the threshold `int(255 t) / 255`.

The manifest lists per case the input files and per run the PyTC call, the Rust decoder
(`contour` or `distance`), its options (serde names of `ContourOptions` /
`DistanceOptions`) and the expected labels, renumbered 1..K in raster order of first
appearance (PyTC keeps its seed ids; the partition is unchanged), as uint8:

    pip install -r tools/requirements-fixtures.txt      # scikit-image >= 0.25
    python3 tools/make_instance_fixtures.py --pytc-git /path/to/pytorch_connectomics/.git \
        [--out crates/em-decode/tests/fixtures/instances]

(`--pytc-git` defaults to $PYTC_GIT; any clone of github.com/zudi-lin/pytorch_connectomics
holding the three commits below, bare or not.)
"""
import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

PYTC_MASTER = "066f1c20acf502b3845c21c537fa0cafe37fbfcb"
PYTC_V2 = "b390a00fef1ce0b9d6e8c451d652169ee461bb78"  # branch v2.0
PYTC_V1 = "20ccfde6f85868351b00d7b795d4cf89a251d6be"  # tag v1.0.0
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "crates/em-decode/tests/fixtures/instances"
SHAPE = (12, 32, 32)


# --------------------------------------------------------------------------------------
# Loading PyTC standalone
# --------------------------------------------------------------------------------------

def git_show(git_dir, commit, path, dest):
    text = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(text)
    return dest


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def package(name):
    mod = types.ModuleType(name)
    mod.__path__ = []
    sys.modules[name] = mod
    return mod


def load_decoding(git_dir, commit, tag, tmp):
    """connectomics/decoding/{utils,segmentation}.py of `commit` as package `_pytc_<tag>`."""
    root = tmp / tag
    for p in ("connectomics/decoding/segmentation.py", "connectomics/decoding/utils.py",
              "connectomics/data/process/bbox.py", "connectomics/data/process/misc.py"):
        git_show(git_dir, commit, p, root / p)
    bbox = load(f"_pytc_{tag}_bbox", root / "connectomics/data/process/bbox.py")
    misc = load(f"_pytc_{tag}_misc", root / "connectomics/data/process/misc.py")
    for name in ("connectomics", "connectomics.data"):
        sys.modules.setdefault(name, types.ModuleType(name))
    proc = types.ModuleType("connectomics.data.process")
    proc.bbox_ND, proc.crop_ND, proc.get_seg_type = bbox.bbox_ND, bbox.crop_ND, misc.get_seg_type
    sys.modules["connectomics.data.process"] = proc
    package(f"_pytc_{tag}")
    load(f"_pytc_{tag}.utils", root / "connectomics/decoding/utils.py")
    return load(f"_pytc_{tag}.segmentation", root / "connectomics/decoding/segmentation.py")


def load_v1(git_dir, tmp):
    """connectomics/utils/process.py of v1.0.0 (its `connectomics.data.utils` imports are
    given from v1.0.0's data_bbox.py; getSegType only picks the output dtype)."""
    root = tmp / "v1"
    git_show(git_dir, PYTC_V1, "connectomics/data/utils/data_bbox.py", root / "data_bbox.py")
    git_show(git_dir, PYTC_V1, "connectomics/utils/process.py", root / "process.py")
    bbox = load("_pytc_v1_bbox", root / "data_bbox.py")
    utils = types.ModuleType("connectomics.data.utils")
    utils.bbox_ND, utils.crop_ND, utils.replace_ND = bbox.bbox_ND, bbox.crop_ND, bbox.replace_ND
    utils.getSegType = lambda mid: np.uint32 if mid < 2**32 else np.uint64
    sys.modules["connectomics.data.utils"] = utils
    return load("_pytc_v1_process", root / "process.py")


class SkimageCwatershed:
    """mahotas.cwatershed(surface, markers, mask=...) as PyTC v2.0 calls it, answered by
    skimage.segmentation.watershed(surface, markers, mask=mask)."""

    @staticmethod
    def cwatershed(surface, markers, mask=None):
        from skimage.segmentation import watershed
        return watershed(surface, markers, mask=mask)


class NoSeeds(Exception):
    pass


class CheckedMahotas:
    """mahotas.cwatershed, refusing seedless calls: mahotas leaves its output uninitialised
    where no seed floods, so PyTC master's result is undefined there (such runs are skipped)."""

    @staticmethod
    def cwatershed(surface, markers, *a, **k):
        import mahotas
        if not np.any(markers):
            raise NoSeeds()
        return mahotas.cwatershed(surface, markers, *a, **k)


# --------------------------------------------------------------------------------------
# Synthetic predictions
# --------------------------------------------------------------------------------------

def rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q


def objects(rng, kind):
    """Ground-truth labels: each voxel goes to the ellipsoid in which its normalised radius
    is smallest (< 1), so that neighbours touch."""
    zz, yy, xx = np.indices(SHAPE, dtype=np.float64)
    pts = np.stack([zz * 2.0, yy, xx], axis=-1)  # anisotropic: z spacing 2
    best = np.full(SHAPE, np.inf)
    gt = np.zeros(SHAPE, np.int32)
    n = {"spheres": 7, "mito": 6, "plateau": 5}[kind]
    for k in range(1, n + 1):
        c = np.array([rng.uniform(4, 2 * SHAPE[0] - 4), rng.uniform(5, 27), rng.uniform(5, 27)])
        if kind == "mito":
            r = np.array([rng.uniform(9, 14), rng.uniform(3, 4.5), rng.uniform(3, 4.5)])
        else:
            r = rng.uniform(4.5, 7.5, size=3)
        rel = (pts - c) @ rotation(rng)
        rad = np.sqrt(((rel / r) ** 2).sum(-1))
        take = (rad < 1) & (rad < best)
        gt[take], best[take] = k, rad[take]
    return gt


def predictions(rng, gt, kind):
    fg = ndi.gaussian_filter((gt > 0).astype(np.float64), 1.0) + rng.normal(0, 0.04, SHAPE)
    edge = np.zeros(SHAPE, bool)
    for ax in range(3):
        d = np.diff(gt, axis=ax) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= d
        edge[tuple(hi)] |= d
    contour = ndi.gaussian_filter(edge.astype(np.float64), 0.8)
    contour = contour / contour.max() * 1.3 + rng.normal(0, 0.04, SHAPE)
    dist = -np.minimum(ndi.distance_transform_edt(gt == 0, sampling=(2, 1, 1)) / 4.0, 1.0)
    for k in range(1, gt.max() + 1):
        m = gt == k
        if m.any():
            e = ndi.distance_transform_edt(m, sampling=(2, 1, 1))
            dist[m] = e[m] / e.max()
    dist = ndi.gaussian_filter(dist, 0.6) + rng.normal(0, 0.04, SHAPE)
    maps = [np.clip(fg, 0, 1), np.clip(contour, 0, 1), np.clip((dist + 1) / 2, 0, 1)]
    if kind == "plateau":
        # Coarse levels: wide plateaus, seeds and basins of equal value.
        maps = [np.round(m * 6) / 6 for m in maps]
        maps[0][gt > 0] = np.maximum(maps[0][gt > 0], 1.0)
    return [np.round(m * 255).astype(np.uint8) for m in maps]


def basin():
    """Two seeds at one level and an unseeded basin of higher foreground nearer to seed A:
    scikit-image (>= 0.25) raises the basin's cost to the entering path's level and splits
    it between the fronts by age; mahotas lets the first front flood all of it."""
    shape = (6, 24, 24)
    fg = np.full(shape, 0.05)
    fg[:, 2:22, 2:22] = 0.9
    fg[1:5, 8:16, 11:17] = 1.0  # the basin (contour high: no seed there)
    contour = np.full(shape, 0.9)
    for xs in (slice(6, 9), slice(20, 22)):  # seed A (2 voxels from the basin), seed B (3)
        fg[1:5, 10:14, xs] = 0.92
        contour[1:5, 10:14, xs] = 0.0
    dist = fg.copy()
    return [np.round(m * 255).astype(np.uint8) for m in (fg, contour, dist)]


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------

def first_appearance(seg):
    flat = seg.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids != 0
    ids, first = ids[keep], first[keep]
    order = ids[np.argsort(first)]
    lut = {int(v): i + 1 for i, v in enumerate(order)}
    out = np.zeros(flat.shape, np.uint8 if len(ids) < 256 else np.uint16)
    for v, n in lut.items():
        out[flat == v] = n
    assert len(lut) < 2**16
    return out.reshape(seg.shape)


def k255(t):
    return int(255 * t) / 255


def runs_for(mods, u8, f32, case):
    """(pytc description, callable, rust decoder, rust options) per run."""
    master, v2, v1 = mods
    stack_u8 = np.stack(u8)
    stack_f = np.stack(f32)
    ones, zeros = np.ones_like(f32[0]), np.zeros_like(f32[0])
    only_dist = np.stack([ones, zeros, f32[2]])
    out = []

    variants = [
        dict(),
        dict(min_seed_size=4, min_instance_size=0),
        dict(min_instance_size=300),
        dict(min_instance_size=200, remove_small_mode="neighbor"),
    ]
    if case in ("plateau", "basin"):
        variants.append(dict(min_seed_size=1, min_instance_size=0))

    def rust_common(kw):
        d = {}
        if "min_seed_size" in kw:
            d["min_seed_size"] = kw["min_seed_size"]
        if "min_instance_size" in kw:
            d["min_instance_size"] = kw["min_instance_size"]
        if "remove_small_mode" in kw:
            d["small_object_mode"] = kw["remove_small_mode"]
        return d

    for kw in variants:
        common = rust_common(kw)
        for flood, mod in (("masked", v2), ("unmasked", master)):
            tag = "v2.0+skimage" if flood == "masked" else "master"
            # decode_binary_watershed: uint8 input, thresholds int(255 t).
            for seed_t, fg_t in ((0.98, 0.85), (0.9, 0.6)):
                pk = dict(seed_threshold=seed_t, foreground_threshold=fg_t,
                          min_instance_size=kw.get("min_instance_size", 128),
                          remove_small_mode=kw.get("remove_small_mode", "background"),
                          min_seed_size=kw.get("min_seed_size", 32))
                out.append((f"{tag} decode_binary_watershed({pk})",
                            lambda m=mod, pk=pk: m.decode_binary_watershed(stack_u8[:1], **pk),
                            "distance",
                            dict(common, seed_threshold=k255(seed_t),
                                 foreground_threshold=k255(fg_t), flood=flood)))
            # decode_binary_contour_watershed: float input (prediction_scale=1).
            for seed_t, contour_t, fg_t in ((0.9, 0.8, 0.85), (0.8, 0.4, 0.5)):
                pk = dict(seed_threshold=seed_t, contour_threshold=contour_t,
                          foreground_threshold=fg_t, prediction_scale=1,
                          min_instance_size=kw.get("min_instance_size", 128),
                          remove_small_mode=kw.get("remove_small_mode", "background"),
                          min_seed_size=kw.get("min_seed_size", 32))
                out.append((f"{tag} decode_binary_contour_watershed({pk})",
                            lambda m=mod, pk=pk: m.decode_binary_contour_watershed(stack_f[:2], **pk),
                            "contour",
                            dict(common, seed_threshold=seed_t, seed_contour_threshold=contour_t,
                                 foreground_threshold=fg_t, flood=flood)))
            # decode_binary_contour_distance_watershed: float input (prediction_scale=1).
            for bt, ct, dt in (((0.9, 0.85), (0.8, 1.1), (0.5, 0.0)),
                               ((0.8, 0.5), (0.6, 0.9), (0.3, -0.5))):
                pk = dict(binary_threshold=bt, contour_threshold=ct, distance_threshold=dt,
                          prediction_scale=1,
                          min_instance_size=kw.get("min_instance_size", 128),
                          remove_small_mode=kw.get("remove_small_mode", "background"),
                          min_seed_size=kw.get("min_seed_size", 32))
                out.append((f"{tag} decode_binary_contour_distance_watershed({pk})",
                            lambda m=mod, pk=pk: m.decode_binary_contour_distance_watershed(stack_f, **pk),
                            "contour+distance",
                            dict(common, seed_threshold=bt[0], foreground_threshold=bt[1],
                                 seed_contour_threshold=ct[0], foreground_contour_threshold=ct[1],
                                 seed_distance_threshold=dt[0],
                                 foreground_distance_threshold=dt[1], flood=flood)))
            # The distance channel alone: foreground 1, contour 0.
            for dt in ((0.5, 0.0), (0.2, -0.3)):
                pk = dict(distance_threshold=dt, prediction_scale=1,
                          min_instance_size=kw.get("min_instance_size", 128),
                          remove_small_mode=kw.get("remove_small_mode", "background"),
                          min_seed_size=kw.get("min_seed_size", 32))
                out.append((f"{tag} decode_binary_contour_distance_watershed(ones, zeros, distance, {pk})",
                            lambda m=mod, pk=pk: m.decode_binary_contour_distance_watershed(only_dist, **pk),
                            "distance-map",
                            dict(common, seed_threshold=dt[0], foreground_threshold=dt[1],
                                 flood=flood)))
        # PyTC v1.0.0, skimage watershed with mask, uint8 inputs.
        pk = dict(thres_small=kw.get("min_instance_size", 128),
                  remove_small_mode=kw.get("remove_small_mode", "background"),
                  seed_thres=kw.get("min_seed_size", 32))
        out.append((f"v1.0.0 binary_watershed(thres1=0.98, thres2=0.85, {pk})",
                    lambda pk=pk: v1.binary_watershed(stack_u8[:1], 0.98, 0.85, **pk),
                    "distance", dict(common, seed_threshold=k255(0.98),
                                     foreground_threshold=k255(0.85), flood="masked")))
        out.append((f"v1.0.0 bc_watershed(thres1=0.9, thres2=0.8, thres3=0.85, {pk})",
                    lambda pk=pk: v1.bc_watershed(stack_u8[:2], 0.9, 0.8, 0.85, **pk),
                    "contour", dict(common, seed_threshold=k255(0.9),
                                    seed_contour_threshold=k255(0.8),
                                    foreground_threshold=k255(0.85), flood="masked")))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pytc-git", default=None, help="git dir of pytorch_connectomics ($PYTC_GIT)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    import os
    git_dir = args.pytc_git or os.environ.get("PYTC_GIT")
    if not git_dir:
        sys.exit("give --pytc-git or $PYTC_GIT")
    import skimage
    if tuple(int(x) for x in skimage.__version__.split(".")[:2]) < (0, 25):
        sys.exit("scikit-image >= 0.25 needed (its watershed raises costs to the parent's)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        master = load_decoding(git_dir, PYTC_MASTER, "master", tmp)
        v2 = load_decoding(git_dir, PYTC_V2, "v2", tmp)
        v2.mahotas = SkimageCwatershed
        master.mahotas = CheckedMahotas
        v1 = load_v1(git_dir, tmp)

    out_dir = args.out
    if out_dir.exists():
        for f in out_dir.iterdir():
            f.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}

    def save(arr, name):
        h = hashlib.sha1(arr.tobytes() + str(arr.dtype).encode()).hexdigest()
        if h not in written:
            np.save(out_dir / name, arr)
            written[h] = name
        return written[h]

    manifest = {"pytc": {"repo": "zudi-lin/pytorch_connectomics", "master": PYTC_MASTER,
                         "v2.0": PYTC_V2, "v1.0.0": PYTC_V1},
                "versions": {"numpy": np.__version__, "scikit-image": skimage.__version__},
                "shape": list(SHAPE), "cases": []}
    for seed, kind in ((1, "spheres"), (2, "mito"), (3, "plateau"), (4, "basin")):
        rng = np.random.default_rng(seed)
        u8 = basin() if kind == "basin" else predictions(rng, objects(rng, kind), kind)
        f32 = [(u8[0] / 255).astype(np.float32), (u8[1] / 255).astype(np.float32),
               (u8[2] / 255 * 2.0 - 1.0).astype(np.float32)]
        case = {"name": kind,
                "foreground": save(f32[0], f"{kind}_foreground.npy"),
                "contour": save(f32[1], f"{kind}_contour.npy"),
                "distance": save(f32[2], f"{kind}_distance.npy"),
                "runs": []}
        skipped = 0
        for i, (desc, fn, decoder, options) in enumerate(runs_for((master, v2, v1), u8, f32, kind)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    res = np.asarray(fn())
                except NoSeeds:
                    skipped += 1
                    continue
                except Exception as e:
                    sys.exit(f"{kind}: {desc}: {e}")
            exp = first_appearance(res)
            case["runs"].append({"pytc": desc, "decoder": decoder, "options": options,
                                 "instances": int(exp.max()),
                                 "expected": save(exp, f"{kind}_run{i:02d}.npy")})
        manifest["cases"].append(case)
        print(kind, len(case["runs"]), "runs,", skipped, "seedless mahotas runs skipped,", "instances:",
              sorted({r["instances"] for r in case["runs"]}))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
