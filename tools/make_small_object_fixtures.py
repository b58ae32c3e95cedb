#!/usr/bin/env python3
"""Reference fixtures for PyTorch Connectomics' (PyTC) small-object removal.

PyTC: connectomics/decoding/utils.py, `remove_small_instances(segm, thres_small, mode)`
with modes "background", "background_2d", "neighbor", "neighbor_2d" (commit PYTC_COMMIT of
github.com/zudi-lin/pytorch_connectomics). This script holds an independent numpy/scipy
re-implementation of those semantics (`reference_remove_small`), builds a handful of small
deterministic label volumes, runs every mode at a few thresholds and writes inputs and
expected outputs as .npy plus `manifest.json`:

    pip install -r tools/requirements.txt
    python3 tools/make_small_object_fixtures.py \
        [--out crates/em-decode/tests/fixtures/small_objects] [--pytc /tmp/pytorch_connectomics]

When a PyTC source tree is given (default: $PYTC_ROOT or /tmp/pytorch_connectomics, e.g.
`git archive` of the commit below), PyTC's own `remove_small_instances` is loaded
standalone (only numpy/scipy/scikit-image are needed: connectomics/decoding/utils.py plus
connectomics/data/process/{bbox,misc}.py, without importing the torch-dependent package)
and every expected output is asserted equal to PyTC's. The manifest records, per run,
whether that check was done (`pytc_checked`).

Semantics reproduced (see the module docstring of `reference_remove_small`):
  * size = voxel count of a label id (all its voxels, connected or not), computed ONCE from
    the input; "small" means size < min_size (strict; skimage's deprecated `min_size`).
  * background: small labels -> 0.  background_2d: the same per z-slice (per-slice sizes).
  * neighbor: labels visited in ascending id order (INCLUDING 0, the background, when the
    background has < min_size voxels); each small label is relabelled to the most frequent
    non-zero label on its rim = dilation by a 1x3x3 (in-plane, 8-connected) box minus the
    label itself, read from the CURRENT (already partially merged) volume; ties -> the
    smallest id; rim without any non-zero label -> 0.  Sizes are not updated after merges.
  * neighbor_2d: the same per z-slice with a 3x3 box and per-slice sizes.
  * no renumbering (PyTC's callers only call fastremap.refit, a dtype shrink).
"""
import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import types
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

PYTC_REPO = "zudi-lin/pytorch_connectomics"
PYTC_COMMIT = "066f1c20acf502b3845c21c537fa0cafe37fbfcb"
MODES = ["background", "neighbor", "background_2d", "neighbor_2d"]
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "crates/em-decode/tests/fixtures/small_objects"


# --------------------------------------------------------------------------------------
# Independent re-implementation
# --------------------------------------------------------------------------------------

def _remove_to_background(seg, min_size):
    """Labels (including 0, harmlessly) with fewer than `min_size` voxels become 0."""
    out = seg.copy()
    ids, inverse, counts = np.unique(seg, return_inverse=True, return_counts=True)
    small = counts < min_size
    out[small[inverse.reshape(seg.shape)]] = 0
    return out


def _merge_into_neighbors(seg, min_size, footprint):
    """Sequential merge of small labels into their most frequent non-zero rim label."""
    seg = seg.copy()
    ids, counts = np.unique(seg, return_counts=True)  # sizes frozen here (never updated)
    for label, size in zip(ids, counts):  # ascending id order, 0 included
        if size >= min_size:
            continue
        mask = seg == label  # current volume: earlier merges may have grown this label
        rim = ndi.binary_dilation(mask, structure=footprint) & ~mask  # zero outside volume
        touching = seg[rim]
        touching = touching[touching != 0]
        if touching.size == 0:
            target = 0
        else:
            u, c = np.unique(touching, return_counts=True)  # u ascending
            target = u[np.argmax(c)]  # first maximum -> smallest id among ties
        seg[mask] = target
    return seg


def reference_remove_small(seg, min_size, mode):
    """Re-implementation of PyTC remove_small_instances(seg, min_size, mode); no mutation."""
    if mode == "background":
        return _remove_to_background(seg, min_size)
    if mode == "background_2d":
        return np.stack([_remove_to_background(s, min_size) for s in seg], axis=0)
    if mode == "neighbor":
        return _merge_into_neighbors(seg, min_size, np.ones((1, 3, 3), dtype=bool))
    if mode == "neighbor_2d":
        return np.stack(
            [_merge_into_neighbors(s, min_size, np.ones((3, 3), dtype=bool)) for s in seg], axis=0
        )
    raise ValueError(mode)


# --------------------------------------------------------------------------------------
# PyTC's own function, loaded standalone from a source checkout
# --------------------------------------------------------------------------------------

def load_pytc(root):
    root = Path(root)
    utils_py = root / "connectomics/decoding/utils.py"
    if not utils_py.is_file():
        return None

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    bbox = load("_pytc_bbox", root / "connectomics/data/process/bbox.py")
    misc = load("_pytc_misc", root / "connectomics/data/process/misc.py")
    # decoding/utils.py does `from connectomics.data.process import get_seg_type, bbox_ND,
    # crop_ND`; provide exactly those without importing the (torch/monai) package.
    for name in ("connectomics", "connectomics.data"):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    proc = types.ModuleType("connectomics.data.process")
    proc.bbox_ND, proc.crop_ND, proc.get_seg_type = bbox.bbox_ND, bbox.crop_ND, misc.get_seg_type
    sys.modules["connectomics.data.process"] = proc
    return load("_pytc_decoding_utils", utils_py)


def skimage_min_size_is_strict():
    """PyTC calls skimage's remove_small_objects(segm, thres_small) positionally, i.e. with
    the (0.26-deprecated) `min_size`: strict `<` up to 0.25. scikit-image 0.26.0 forwards that
    value to `max_size` (`<=`), skimage issue #8001 / PR #8003; detect it."""
    from skimage.morphology import remove_small_objects
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return remove_small_objects(np.array([[1, 2, 2]]), 2).tolist() == [[0, 2, 2]]


def pytc_remove_small(pytc, seg, min_size, mode):
    arg = seg.copy()  # PyTC's neighbor modes relabel their argument in place
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage: min_size deprecated / "only one label"
        return np.asarray(pytc.remove_small_instances(arg, min_size, mode))


# --------------------------------------------------------------------------------------
# Test cases
# --------------------------------------------------------------------------------------

def case_tie_smallest_id():
    s = np.zeros((4, 12, 12), np.uint32)
    s[:, :10, :6] = 7
    s[:, :10, 6:] = 3
    # id 5: 2x2 straddling the 7|3 boundary; in-plane rim = 6 voxels of 7, 6 of 3 -> 3.
    s[1, 5:7, 5:7] = 5
    # id 12: 1x2 in the background rows; rim = 4 voxels of 7 and 6 of background -> 7
    # (background never wins against a non-zero label).
    s[2, 10, 2:4] = 12
    # id 2: single voxel at the volume edge (y=0) next to the 7|3 boundary: the clipped rim
    # has 3 voxels of 7 and 2 of 3 -> 7.
    s[3, 0, 5] = 2
    return s, [4, 5], ("2x2 id 5 with a 6:6 tie between 7 and 3 (smallest id 3 wins); id 12 "
                       "with more background than label 7 on its rim (7 wins); id 2 at the "
                       "volume edge; min_size 4 keeps the 4-voxel id 5 (strict <)")


def case_isolated_and_z_only():
    s = np.zeros((4, 12, 12), np.uint32)
    s[0:2, 2:9, 2:9] = 1          # 98 voxels
    s[2, 4:6, 4:6] = 4            # directly above 1, but in-plane rim is all background
    s[0, 4, 9] = 6                # touches 1 in-plane
    s[3, 0:2, 0] = 8              # corner object next to 3
    s[3, 0:6, 1:6] = 3            # 30 voxels (overwrites nothing of 8)
    s[1, 10, 1:3] = 9             # floating in background
    s[:, 10, 10:12] = 10          # thin column: 8 voxels in 3-D, 2 per slice
    s[3, 9, 9:12] = 11            # touches 10 on z=3 only
    return s, [3, 5, 31], ("id 4 touches 1 only across z (1x3x3 rim ignores z -> 0); id 9 "
                           "isolated -> 0; id 10 large in 3-D but small per slice; corner "
                           "object 8; min_size 31 makes 3 (30 voxels) small")


def case_multi_neighbor():
    s = np.zeros((6, 16, 16), np.uint32)
    s[:, 1:7, 1:9] = 1
    s[:, 1:7, 9:15] = 2
    s[:, 7:15, 1:9] = 3
    s[:, 7:12, 9:15] = 4          # rows 12..14 on the right stay background
    s[2:4, 5:8, 8:12] = 20        # 24 voxels; rim 1:8, 2:12, 3:6, 4:10 -> 2
    s[4:6, 5:9, 7:10] = 23        # 24 voxels; rim 1:10, 2:8, 3:10, 4:8 -> 1 (tie 1/3)
    s[1, 11:13, 11:13] = 21       # rim 4:6, background:6 -> 4
    s[4, 13, 13] = 22             # background only -> 0
    return s, [4, 25], ("id 20 touches four labels with unequal rim counts (2 wins, not the "
                        "smallest id); id 23 touches four with a 1/3 tie; id 21 has as much "
                        "background as label 4 on its rim; id 22 in background only")


def case_enclosed():
    s = np.ones((4, 12, 12), np.uint32)
    s[:, :, 9:] = 0
    s[1:3, 4:6, 4:6] = 2          # 8 voxels fully enclosed by 1
    s[0, 1, 1] = 5                # single voxel enclosed by 1 in slice 0
    s[:, 6, 10] = 6               # column in the background region, touching nothing
    s[3, 8:10, 7:9] = 9           # 4 voxels touching 1 and background
    return s, [5, 9], ("id 2 (8 voxels) fully enclosed by 1; id 5 enclosed single voxel; "
                       "id 6 in background; min_size 9 vs 8-voxel id 2 (strict <)")


def case_sequential_chain():
    s = np.zeros((4, 12, 12), np.uint32)
    s[:, 0:3, :] = 9              # large
    s[1, 3:5, 4:7] = 5            # B: 6 voxels, touches 9
    s[1, 5, 5:7] = 2              # A: 2 voxels, touches only B (and background) -> 5 -> 9
    s[2, 7, 1:3] = 11             # H: processed before G, its rim is mostly G -> 12
    s[2, 8:10, 1:4] = 12          # G: 6 voxels, grows by H, then merges with stale size
    s[2, 10, 1:4] = 30            # large-ish partner of G
    s[:, 11, :] = 30              # 30 gets 48 + 3 voxels
    s[0, 6, 8:10] = 3             # D: 2 voxels, rim mostly E
    s[0, 5:7, 10:12] = 4          # E: 4 voxels; after absorbing D its rim changes
    s[0, 4, 9:12] = 40            # large partner of E
    s[1:4, 4, 9:12] = 40
    return s, [3, 7, 13], ("chains: 2 -> 5 -> 9 (5 keeps its stale 6-voxel size although it "
                           "holds 8 after absorbing 2); 11 -> 12 -> 30 (12 grows by 11 first); "
                           "3 -> 4 -> 40; min_size 3 merges the 2-voxel ids into "
                           "the not-yet-visited 5, 4, 12 only; min_size 13 makes 40 small: "
                           "3 -> 4 -> 40 -> 0")


def case_small_background():
    s = np.zeros((4, 8, 8), np.uint32)
    s[:, :, :4] = 1
    s[:, :, 4:] = 2
    s[:, 0:4, 4:] = 3
    s[1, 3:5, 3] = 0              # 2 background voxels between 1, 2, 3 (z=1)
    s[2, 7, 7] = 0                # 1 background voxel at the corner (z=2)
    s[3, 5, 5] = 4                # small id 4 inside 2
    return s, [2, 4, 200], ("only 3 background voxels: when 0 is 'small' (min_size 4) PyTC's "
                            "neighbor modes relabel the background itself; background_2d and "
                            "neighbor_2d see per-slice background counts (0 in slices 0 and 3); "
                            "min_size 200 (every id small) cascades to an all-zero volume")


def case_random_blobs():
    rng = np.random.default_rng(20240607)
    shape = (6, 20, 20)
    seeds = np.stack([rng.integers(0, n, 14) for n in shape], axis=1)
    ids = rng.choice(np.arange(1, 60), 14, replace=False).astype(np.uint32)
    zz, yy, xx = np.indices(shape)
    d = ((zz[..., None] - seeds[:, 0]) * 3.0) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2 \
        + (xx[..., None] - seeds[:, 2]) ** 2
    s = ids[np.argmin(d, axis=-1)]
    bg = ndi.gaussian_filter(rng.random(shape), sigma=(0.7, 2.0, 2.0)) < 0.47
    s[bg] = 0
    for _ in range(30):           # small fragments, ids may collide with existing labels
        z, y, x = (int(rng.integers(0, n)) for n in shape)
        dz, dy, dx = (int(v) for v in rng.integers(1, [3, 4, 4]))
        s[z:z + dz, y:y + dy, x:x + dx] = rng.integers(1, 80)
    return s, [6, 25, 120], "seeded Voronoi labels, smooth background, 30 random fragments"


def case_uint64_ids():
    big = [2**40 + 1, 2**33, 2**63 + 5, 2**64 - 2, 2**32 + 7]
    s = np.zeros((4, 10, 10), np.uint64)
    s[:, :, :5] = big[0]
    s[:, :, 5:] = big[1]
    s[:, 8:, :] = big[2]
    s[1, 3:5, 4:6] = big[3]       # 2x2 on the big[0]|big[1] boundary: tie -> 2**33
    s[2, 7, 7] = big[4]           # touches big[1] (5) and big[2] (3)
    s[3, 0, 0] = 3                # small id at the corner
    return s, [2, 5], ("uint64 ids above 2**32 and 2**63; tie between 2**40+1 and 2**33 -> "
                       "2**33 (smallest); PyTC's background modes are not run on it "
                       "(skimage bincount would need max_id+1 entries)")


CASES = {
    "tie_smallest_id": case_tie_smallest_id,
    "isolated_and_z_only": case_isolated_and_z_only,
    "multi_neighbor": case_multi_neighbor,
    "enclosed": case_enclosed,
    "sequential_chain": case_sequential_chain,
    "small_background": case_small_background,
    "random_blobs": case_random_blobs,
    "uint64_ids": case_uint64_ids,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--pytc", type=Path,
                    default=Path(os.environ.get("PYTC_ROOT", "/tmp/pytorch_connectomics")))
    ap.add_argument("--require-pytc", action="store_true",
                    help="fail when the PyTC checkout is missing")
    args = ap.parse_args()

    pytc = load_pytc(args.pytc)
    if pytc is None:
        if args.require_pytc:
            sys.exit(f"no PyTC checkout at {args.pytc}")
        print(f"note: no PyTC checkout at {args.pytc}; writing the re-implementation's output "
              "without the cross-check", file=sys.stderr)

    strict = skimage_min_size_is_strict()
    if pytc is not None and not strict:
        print("warning: this scikit-image removes objects of size == min_size (0.26.0 bug, "
              "skimage#8001); PyTC's background modes are not cross-checked. Use "
              "scikit-image!=0.26.0 for the full check.", file=sys.stderr)
        if args.require_pytc:
            sys.exit("--require-pytc needs scikit-image != 0.26.0")

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    import skimage
    manifest = {
        "source": f"https://github.com/{PYTC_REPO} @ {PYTC_COMMIT}, "
                  "connectomics/decoding/utils.py remove_small_instances / merge_small_objects",
        "generator": "tools/make_small_object_fixtures.py",
        "numpy": np.__version__,
        "scikit_image": skimage.__version__,
        "semantics": {
            "size": "voxel count per label id (whole volume, or per z-slice for *_2d), computed "
                    "once before any merge; small iff size < min_size",
            "background": "small labels -> 0",
            "neighbor": "ascending id order incl. 0; rim = 1x3x3 (in-plane 8-neighbour) "
                        "dilation minus the label, read from the partially merged volume; "
                        "target = most frequent non-zero rim label, ties -> smallest id; "
                        "no non-zero rim label -> 0",
            "neighbor_2d": "neighbor per z-slice with a 3x3 footprint and per-slice sizes",
            "renumbered": False,
        },
        "cases": [],
    }
    total = 0
    checked = 0
    for name, make in CASES.items():
        seg, thresholds, note = make()
        seg = np.ascontiguousarray(seg)
        in_file = f"{name}_input.npy"
        np.save(out / in_file, seg)
        case = {"name": name, "input": in_file, "dtype": seg.dtype.name, "shape": list(seg.shape),
                "note": note, "runs": []}
        written = {}  # content hash -> file name (identical outputs share one file)
        for mode in MODES:
            for min_size in thresholds:
                expected = reference_remove_small(seg, min_size, mode)
                assert expected.dtype == seg.dtype and expected.shape == seg.shape
                run = {"mode": mode, "min_size": min_size, "renumbered": False}
                if pytc is not None:
                    if mode.startswith("background") and not strict:
                        run["pytc_checked"] = False
                        run["pytc_note"] = "skipped: scikit-image 0.26.0 min_size bug"
                    elif mode.startswith("background") and int(seg.max()) > 2**24:
                        run["pytc_checked"] = False
                        run["pytc_note"] = ("not run: skimage.remove_small_objects does "
                                            "np.bincount(labels) -> max_id+1 counters "
                                            "(MemoryError for these ids)")
                    else:
                        got = pytc_remove_small(pytc, seg, min_size, mode)
                        assert got.dtype == seg.dtype, (name, mode, min_size, got.dtype)
                        if not np.array_equal(got, expected):
                            diff = np.argwhere(got != expected)
                            sys.exit(f"MISMATCH {name} {mode} {min_size}: {len(diff)} voxels, "
                                     f"first {diff[0].tolist()} pytc={got[tuple(diff[0])]} "
                                     f"ours={expected[tuple(diff[0])]}")
                        run["pytc_checked"] = True
                        checked += 1
                else:
                    run["pytc_checked"] = False
                key = hashlib.sha1(expected.tobytes()).hexdigest()
                if key not in written:
                    if np.array_equal(expected, seg):
                        written[key] = in_file
                    else:
                        written[key] = f"{name}_{mode}_min{min_size}.npy"
                        np.save(out / written[key], expected)
                run["expected"] = written[key]
                run["changed_voxels"] = int(np.count_nonzero(expected != seg))
                case["runs"].append(run)
        manifest["cases"].append(case)
        total += len(case["runs"])

    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{len(CASES)} cases, {total} runs ({checked} checked against PyTC), "
          f"{len(list(out.iterdir()))} files, {size / 1024:.1f} KiB in {out}")


if __name__ == "__main__":
    main()
