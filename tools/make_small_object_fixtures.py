#!/usr/bin/env python3
"""Reference fixtures for PyTorch Connectomics' (PyTC) small-object removal.

PyTC: connectomics/decoding/utils.py, `remove_small_instances(segm, thres_small, mode)`
with modes "background", "background_2d", "neighbor", "neighbor_2d" (commit PYTC_COMMIT of
github.com/zudi-lin/pytorch_connectomics). This script holds an independent numpy/scipy
re-implementation of those semantics (`reference_remove_small`), builds a handful of small
deterministic label volumes, runs every mode at a few thresholds and writes inputs and
expected outputs as .npy plus `manifest.json`. Every input is relabelled so that its non-zero
ids increase in order of first appearance (C-order raster scan; 1..K, or for uint64 cases the
original large ids reassigned in ascending order), which makes PyTC's ascending-id order equal
to first-appearance order. Per run the manifest gives `expected` (PyTC's output, ids as in
the input), `expected_renumbered` (the same renumbered 1..K by first appearance; uint32, or
uint64 for uint64 inputs) and `background_small` (PyTC treats the background as a small label
in that run: 0 < #zeros < min_size, whole volume for 3-D modes, any z-slice for *_2d modes).
Identical arrays of a case share one file:

    pip install -r tools/requirements-fixtures.txt
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
  * no renumbering (PyTC's callers only call fastremap.refit, a dtype shrink); the
    `expected_renumbered` files are derived from PyTC's output afterwards.
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
# Id order, renumbering and the background-size flag (what the Rust tests rely on)
# --------------------------------------------------------------------------------------

def first_appearance_ids(seg):
    """Non-zero ids in order of first appearance in a C-order raster scan."""
    ids, first = np.unique(seg.ravel(), return_index=True)
    keep = ids != 0
    return ids[keep][np.argsort(first[keep], kind="stable")]


def relabel_first_appearance(seg, values=None, dtype=None):
    """The k-th non-zero id in order of first appearance -> values[k] (0 stays 0).

    `values` defaults to 1..K (a renumbering); it must be increasing for the result's ids to
    increase with first appearance (e.g. the sorted original ids, to keep their magnitudes)."""
    order = first_appearance_ids(seg)
    dtype = np.dtype(dtype or seg.dtype)
    values = np.arange(1, len(order) + 1) if values is None else np.asarray(values)
    assert len(values) == len(order)
    sorted_ids = np.sort(order)
    new_for_sorted = np.empty(len(order), dtype=dtype)
    new_for_sorted[np.searchsorted(sorted_ids, order)] = values.astype(dtype)
    out = np.zeros(seg.shape, dtype=dtype)
    nz = seg != 0
    out[nz] = new_for_sorted[np.searchsorted(sorted_ids, seg[nz])]
    return out


def ids_increase_with_first_appearance(seg):
    order = first_appearance_ids(seg)
    return bool(np.all(order[1:] > order[:-1]))


def background_small(seg, min_size, mode):
    """Whether PyTC counts label 0 as a small label in this run: 0 < (#0 voxels) < min_size,
    over the whole volume for 3-D modes, in ANY z-slice for the *_2d modes. PyTC's neighbor
    modes then merge the background itself (ours never touch 0); in the background modes it
    is harmless (0 -> 0)."""
    zeros = (seg == 0).reshape(seg.shape[0], -1).sum(axis=1)
    counts = zeros if mode.endswith("_2d") else [int(zeros.sum())]
    return any(0 < int(c) < min_size for c in counts)


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
    value to `max_size` (`<=`), a regression fixed after 0.26.0; detect it."""
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

# Every case is written with its non-zero ids already increasing in order of first
# appearance (C-order raster scan), so the ids named in the notes are the ids in the fixture;
# main() still passes every input through `relabel_first_appearance` (a no-op for these, a
# real renumbering for random_blobs) and asserts the ordering.

def case_tie_smallest_id():
    s = np.zeros((4, 12, 12), np.uint32)
    s[:, :10, :6] = 1
    s[:, :10, 6:] = 2
    # id 3: 2x2 straddling the 1|2 boundary; in-plane rim = 6 voxels of 1, 6 of 2 -> 1.
    s[1, 5:7, 5:7] = 3
    # id 4: 1x2 in the background rows; rim = 4 voxels of 1 and 6 of background -> 1
    # (background never wins against a non-zero label).
    s[2, 10, 2:4] = 4
    # id 5: single voxel at the volume edge (y=0) next to the 1|2 boundary: the clipped rim
    # has 2 voxels of 1 and 3 of 2 -> 2 (the count beats the smaller id).
    s[3, 0, 6] = 5
    return s, [4, 5], ("2x2 id 3 with a 6:6 tie between 1 and 2 (1, the smaller and first-seen "
                       "id, wins); id 4 with more background than label 1 on its rim (1 wins); "
                       "id 5 at the volume edge with 2 rim voxels of 1 and 3 of 2 (2 wins); "
                       "min_size 4 keeps the 4-voxel id 3 (strict <)")


def case_isolated_and_z_only():
    s = np.zeros((4, 12, 12), np.uint32)
    s[0:2, 2:9, 2:9] = 1          # 98 voxels
    s[0, 4, 9] = 2                # touches 1 in-plane
    s[:, 10, 10:12] = 3           # thin column: 8 voxels in 3-D, 2 per slice
    s[1, 10, 1:3] = 4             # floating in background
    s[2, 4:6, 4:6] = 5            # directly above 1, but in-plane rim is all background
    s[3, 0:2, 0] = 6              # corner object next to 7
    s[3, 0:6, 1:6] = 7            # 30 voxels
    s[3, 9, 9:12] = 8             # touches 3 on z=3 only
    return s, [3, 5, 31], ("id 5 touches 1 only across z (1x3x3 rim ignores z -> 0); id 4 "
                           "isolated -> 0; id 3 large in 3-D but small per slice; corner "
                           "object 6 next to 7; min_size 31 makes 7 (30 voxels) small")


def case_multi_neighbor():
    s = np.zeros((6, 16, 16), np.uint32)
    s[:, 1:7, 1:9] = 1
    s[:, 1:7, 9:15] = 2
    s[:, 7:15, 1:9] = 3
    s[:, 7:12, 9:15] = 4          # rows 12..14 on the right stay background
    s[1, 11:13, 11:13] = 5        # rim 4:6, background:6 -> 4
    s[2:4, 5:8, 8:12] = 6         # 24 voxels; rim 1:8, 2:12, 3:6, 4:10 -> 2
    s[4:6, 5:9, 7:10] = 7         # 24 voxels; rim 1:10, 2:8, 3:10, 4:8 -> 1 (tie 1/3)
    s[4, 13, 13] = 8              # background only -> 0
    return s, [4, 25], ("id 6 touches four labels with unequal rim counts (2 wins, not the "
                        "smallest id); id 7 touches four with a 1/3 tie; id 5 has as much "
                        "background as label 4 on its rim; id 8 in background only")


def case_enclosed():
    s = np.ones((4, 12, 12), np.uint32)
    s[:, :, 9:] = 0
    s[0, 1, 1] = 2                # single voxel enclosed by 1 in slice 0
    s[:, 6, 10] = 3               # column in the background region, touching nothing
    s[1:3, 4:6, 4:6] = 4          # 8 voxels fully enclosed by 1
    s[3, 8:10, 7:9] = 5           # 4 voxels touching 1 and background
    return s, [5, 9], ("id 4 (8 voxels) fully enclosed by 1; id 2 enclosed single voxel; "
                       "id 3 in background; min_size 9 vs 8-voxel id 4 (strict <)")


def case_sequential_chain():
    s = np.zeros((4, 12, 12), np.uint32)
    # z=0: 1 (2 voxels) touches only 2 (6 voxels), which touches 3 (12 voxels).
    s[0, 5, 5:7] = 1
    s[0, 6:8, 4:7] = 2
    s[0, 8:10, 3:9] = 3
    # z=2: 5 (2x2) sits in a notch of 6 (12 voxels), between 4 (left, 24 voxels) and 6;
    # 7 (right, 21 voxels) touches 6 only. Rim counts in the note.
    s[2, 2:10, 0:3] = 4
    s[2, 3:5, 3:5] = 5
    s[2, 3:5, 5:7] = 6
    s[2, 5:7, 3:7] = 6
    s[2, 3:10, 7:10] = 7
    return s, [3, 7, 13], (
        "visiting order and sizes frozen before merging. z=0, chain 1 -> 2 -> 3: min_size 3 "
        "merges 1 into the not-yet-visited 2; min_size 7 sends 1 and 2 into 3 although 2 holds "
        "8 voxels after absorbing 1 (sizes are not updated); min_size 13 makes 3 (12 voxels) "
        "small as well and the whole chain ends as background. z=2, min_size 13: 5 joins 6 "
        "(rim 5 voxels of 6, 4 of label 4); 6 alone would join 7 (rim 5 of 7, 4 of 4, 3 of 5) "
        "but after absorbing 5 its rim has 6 voxels of 4 and 5 of 7, so 5 and 6 end as 4 "
        "(visiting 6 before 5 would give 7)")


def case_small_background():
    s = np.zeros((4, 8, 8), np.uint32)
    s[:, :, :4] = 1
    s[:, :, 4:] = 3
    s[:, 0:4, 4:] = 2
    s[1, 3:5, 3] = 0              # 2 background voxels between 1, 2, 3 (z=1)
    s[2, 7, 7] = 0                # 1 background voxel at the corner (z=2)
    s[3, 5, 5] = 4                # small id 4 inside 3
    return s, [2, 4, 200], ("only 3 background voxels: when 0 is 'small' (min_size 4) PyTC's "
                            "neighbor modes relabel the background itself; background_2d and "
                            "neighbor_2d see per-slice background counts (0 in slices 0 and 3); "
                            "min_size 200 (every id small) cascades to an all-zero volume")


def case_random_blobs():
    rng = np.random.default_rng(20240607)
    shape = (6, 16, 16)           # small: 25 files of this case stay under ~160 KB
    seeds = np.stack([rng.integers(0, n, 14) for n in shape], axis=1)
    ids = rng.choice(np.arange(1, 60), 14, replace=False).astype(np.uint32)
    zz, yy, xx = np.indices(shape)
    d = ((zz[..., None] - seeds[:, 0]) * 3.0) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2 \
        + (xx[..., None] - seeds[:, 2]) ** 2
    s = ids[np.argmin(d, axis=-1)]
    bg = ndi.gaussian_filter(rng.random(shape), sigma=(0.7, 2.0, 2.0)) < 0.49
    s[bg] = 0
    for _ in range(30):           # small fragments, ids may collide with existing labels
        z, y, x = (int(rng.integers(0, n)) for n in shape)
        dz, dy, dx = (int(v) for v in rng.integers(1, [3, 4, 4]))
        s[z:z + dz, y:y + dy, x:x + dx] = rng.integers(1, 80)
    # main() renumbers these random ids to 1..K in order of first appearance.
    # >= 62 background voxels in every slice, so no run has background_small
    return s, [6, 25, 60], ("seeded Voronoi labels, smooth background, 30 random fragments "
                             "(fragment ids may repeat a Voronoi id; several ids are not connected); "
                             "ids renumbered 1..K by first appearance")


def case_uint64_ids():
    # Assigned in increasing order of first appearance (raster order of the writes below).
    v = [3, 2**32 + 7, 2**33, 2**40 + 1, 2**63 + 5, 2**64 - 2]
    s = np.zeros((4, 10, 10), np.uint64)
    s[:, :, :5] = v[1]
    s[:, :, 5:] = v[2]
    s[:, 8:, :] = v[3]
    s[0, 0, 0] = v[0]             # small id at the corner -> 2**32+7
    s[1, 3:5, 4:6] = v[4]         # 2x2 on the v[1]|v[2] boundary: 6:6 tie -> 2**32+7
    s[2, 7, 7] = v[5]             # touches 2**33 (5 voxels) and 2**40+1 (3) -> 2**33
    return s, [2, 5], ("uint64 ids above 2**32 and 2**63, increasing with first appearance; "
                       "tie between 2**32+7 and 2**33 -> 2**32+7 (smallest, first seen); "
                       "PyTC's background modes are not run on it (skimage bincount would need "
                       "max_id+1 entries)")


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


def _content_key(arr):
    return hashlib.sha1(f"{arr.dtype.str}{arr.shape}".encode() + arr.tobytes()).hexdigest()


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
        print("warning: this scikit-image removes objects of size == min_size (a 0.26.0 "
              "regression); PyTC's background modes are not cross-checked. Use "
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
            "input_ids": "every input's non-zero ids increase in order of first appearance "
                         "(C-order raster scan; 0 = background), so PyTC's ascending-id visit "
                         "order and smallest-id tie-break equal first-appearance order; inputs "
                         "are 1..K except uint64 cases, which keep large ids",
            "expected": "PyTC's output as is (same dtype and ids as the input, not renumbered)",
            "expected_renumbered": "expected with non-zero ids renumbered 1..K by first "
                                   "appearance (0 stays 0); uint32, or uint64 for uint64 inputs",
            "background_small": "0 < number of 0 voxels < min_size (whole volume for 3-D "
                                "modes; in any z-slice for *_2d modes): PyTC then treats the "
                                "background as a small label (merged in neighbor modes; a "
                                "no-op 0 -> 0 in background modes)",
            "changed_voxels": "voxels where expected != input",
        },
        "cases": [],
    }
    total = 0
    checked = 0
    n_bg_small = 0
    for name, make in CASES.items():
        raw, thresholds, note = make()
        raw = np.ascontiguousarray(raw)
        if raw.dtype == np.uint64:
            # keep the large ids, reassigned so that ascending value == first appearance
            seg = relabel_first_appearance(raw, values=np.sort(first_appearance_ids(raw)))
        else:
            seg = relabel_first_appearance(raw)  # 1..K by first appearance
        assert ids_increase_with_first_appearance(seg), name
        assert np.array_equal(seg != 0, raw != 0) and seg.dtype == raw.dtype
        in_file = f"{name}_input.npy"
        np.save(out / in_file, seg)
        case = {"name": name, "input": in_file, "dtype": seg.dtype.name, "shape": list(seg.shape),
                "note": note, "runs": []}
        renum_dtype = np.uint64 if seg.dtype == np.uint64 else np.uint32
        # content key -> file name (identical arrays share one file)
        written = {_content_key(seg): in_file}

        def store(arr, file_name):
            key = _content_key(arr)
            if key not in written:
                written[key] = file_name
                np.save(out / file_name, arr)
            return written[key]

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
                stem = f"{name}_{mode}_min{min_size}"
                run["expected"] = store(expected, f"{stem}.npy")
                renumbered = relabel_first_appearance(expected, dtype=renum_dtype)
                run["expected_renumbered"] = store(renumbered, f"{stem}_renumbered.npy")
                run["changed_voxels"] = int(np.count_nonzero(expected != seg))
                run["background_small"] = background_small(seg, min_size, mode)
                n_bg_small += run["background_small"]
                case["runs"].append(run)
        manifest["cases"].append(case)
        total += len(case["runs"])

    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{len(CASES)} cases, {total} runs ({checked} checked against PyTC, "
          f"{n_bg_small} with background_small), {len(list(out.iterdir()))} files, "
          f"{size / 1024:.1f} KiB in {out}")


if __name__ == "__main__":
    main()
