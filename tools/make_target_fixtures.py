#!/usr/bin/env python3
"""Reference fixtures for em-data training targets (crates/em-data/tests/targets.rs).

Writes small .npy files (np.save) and one cases.json into
crates/em-data/tests/fixtures/targets/ (or --out DIR). This script is the reference for
crates/em-data/tests/targets.rs: affinities and affinity masks (source and destination
storage, BANIS's offsets and a mixed-sign list), 6-connected relabelling, 3D / in-plane
boundaries, tanh-squashed signed distance (isotropic and anisotropic sampling) and in-plane
erosion of instance boundaries.

Reproducible: every input is built from fixed numbers or numpy's PCG64 with a fixed seed
(np.random.default_rng(SEED)); running the script again rewrites byte-identical files.

Requirements (tools only, never runtime dependencies of the crates):

    pip install numpy scipy connected-components-3d

    python3 tools/make_target_fixtures.py [--out DIR]

Conventions used by every definition below (labels are int64, shape (Z, Y, X), C order):

    known = labels != -1                      # -1 = unknown
    lab   = np.where(labels < 0, 0, labels)   # 0 = background, > 0 = instance id

Cases (input_<case>.npy, int64):

* blocks (10, 18, 22): label = 1 + (z//4)*100 + (y//6)*10 + (x//7); a few random boxes set
  to 0 (background) and one box set to -1 (unknown).
* cut (6, 16, 16): label 5 is a "U" whose bottom lies outside the crop, so inside the crop
  it is two separate bars (two 6-connected pieces); label 7 touches both bars; label 9 is
  three cubes touching only at a corner / an edge (three pieces under 6-connectivity);
  everything else is 0.
* random (8, 12, 12): values drawn uniformly from {0, 1, 2, 3} (many tiny pieces).

Offset lists (offset o = (dz, dy, dx)):

    banis = [(1,0,0), (0,1,0), (0,0,1), (10,0,0), (0,10,0), (0,0,10)]
    mixed = [(1,0,0), (0,1,0), (0,0,1), (2,0,0), (0,3,0), (0,0,-2)]

Outputs per case:

1. aff_source_<list>_<case>.npy, mask_source_<list>_<case>.npy (uint8, (C, Z, Y, X)):
       aff[c, v]  = 1 if v+o_c is inside AND lab[v] == lab[v+o_c] AND lab[v] != 0 else 0
       mask[c, v] = 1 if v+o_c is inside AND known[v] AND known[v+o_c]           else 0
2. aff_dest_<list>_<case>.npy, mask_dest_<list>_<case>.npy: the same with v-o_c.
3. relabel6_<case>.npy (uint32): cc3d.connected_components(lab.astype(np.uint32),
   connectivity=6): 0 stays background, components are numbered 1..K in order of first
   appearance in a C-order raster scan (z slowest, x fastest). The script asserts that
   cc3d numbers this way (tiny example and every case); should a cc3d version not, it
   renumbers cc3d's output by first appearance itself, so the fixture always IS
   first-appearance numbering. The partition is also checked against
   scipy.ndimage.label (6-connectivity) per label value.
4. boundary3d_<case>.npy (uint8): 1 where lab[v] != 0 and at least one of its 6 face
   neighbours inside the volume has a different lab value (0 counts as different), else 0.
   boundary2d_<case>.npy: the same with only the 4 in-plane (y, x) neighbours.
   Neighbours outside the volume are ignored (the volume border is not a boundary).
5. sdt_<case>.npy, sdt_aniso_<case>.npy (float32): with sampling S,
       lab[v] = l > 0: d =  distance_transform_edt(lab == l, sampling=S)[v]
                       (distance to the nearest voxel in the volume whose label is not l)
       lab[v] == 0:    d = -distance_transform_edt(lab == 0, sampling=S)[v]
                       (minus the distance to the nearest labelled voxel)
       target = tanh(d / 8), computed in float64, stored as float32.
   S = (1, 1, 1) for sdt_, S = (4, 1, 1) (z, y, x) for sdt_aniso_. Unknown voxels (-1) are
   background here. No input has a label (or background) filling the whole volume.
6. erode1_<case>.npy, erode2_<case>.npy (uint32): out = lab; a voxel with lab[v] != 0
   becomes 0 if any voxel in the in-plane window {same z, |dy| <= w, |dx| <= w} that lies
   inside the volume has a different lab value (0 included); w = 1, 2. Uses the ORIGINAL
   lab (one pass, not iterated).

cases.json: cases (name, shape, dtype), the offset lists, and per case the sum of every
array written (integers exactly; float sums as float64 of the stored float32 values), plus
the number of 6-connected components.
"""

import argparse
import json
import os

import cc3d
import numpy as np
from scipy import ndimage

SEED = 20240607

OFFSETS = {
    "banis": [(1, 0, 0), (0, 1, 0), (0, 0, 1), (10, 0, 0), (0, 10, 0), (0, 0, 10)],
    "mixed": [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 3, 0), (0, 0, -2)],
}


# ----------------------------------------------------------------------------- inputs


def make_blocks(rng):
    z, y, x = np.indices((10, 18, 22))
    labels = (1 + (z // 4) * 100 + (y // 6) * 10 + (x // 7)).astype(np.int64)
    for _ in range(4):  # background boxes
        z0, y0, x0 = rng.integers(0, 8), rng.integers(0, 15), rng.integers(0, 19)
        dz, dy, dx = rng.integers(1, 4), rng.integers(2, 6), rng.integers(2, 7)
        labels[z0:z0 + dz, y0:y0 + dy, x0:x0 + dx] = 0
    z0, y0, x0 = rng.integers(0, 7), rng.integers(0, 13), rng.integers(0, 17)
    labels[z0:z0 + 3, y0:y0 + 4, x0:x0 + 5] = -1  # unknown box
    return labels


def make_cut():
    labels = np.zeros((6, 16, 16), np.int64)
    # label 5: a "U" whose bottom (y < 0) is outside the crop: two bars, not connected here
    labels[:, 0:12, 1:4] = 5
    labels[:, 0:12, 8:11] = 5
    # label 7 between the bars, touching both (face contact)
    labels[1:5, 3:9, 4:8] = 7
    # label 9: three cubes; A-B touch only at a corner, A-C only along an edge
    labels[0:2, 12:14, 12:14] = 9  # A
    labels[2:4, 14:16, 14:16] = 9  # B: corner (1,13,13)-(2,14,14)
    labels[0:2, 14:16, 10:12] = 9  # C: edge (z, 13, 12)-(z, 14, 11)
    return labels


def make_random(rng):
    return rng.integers(0, 4, size=(8, 12, 12)).astype(np.int64)


# ----------------------------------------------------------------------------- references


def split(labels):
    known = labels != -1
    lab = np.where(labels < 0, 0, labels)
    return lab, known


def shifted(arr, off, sign):
    """(value at v + sign*off, inside) for every voxel v; value is arr[v] where outside."""
    shape = np.array(arr.shape)
    idx = np.indices(arr.shape)
    nb = idx + sign * np.array(off).reshape(3, 1, 1, 1)
    inside = np.all((nb >= 0) & (nb < shape.reshape(3, 1, 1, 1)), axis=0)
    nb = np.where(inside, nb, idx)
    return arr[nb[0], nb[1], nb[2]], inside


def affinities(labels, offsets, sign):
    """sign=+1: source storage (edge v -> v+o stored at v); sign=-1: destination (v-o)."""
    lab, known = split(labels)
    c = len(offsets)
    aff = np.zeros((c,) + lab.shape, np.uint8)
    mask = np.zeros((c,) + lab.shape, np.uint8)
    for i, off in enumerate(offsets):
        nlab, inside = shifted(lab, off, sign)
        nknown, _ = shifted(known, off, sign)
        aff[i] = inside & (lab == nlab) & (lab != 0)
        mask[i] = inside & known & nknown
    return aff, mask


def first_appearance(cc):
    """Renumber a labelling 1..K by first appearance in C-order raster scan (0 stays 0)."""
    flat = cc.ravel()
    out = np.zeros_like(flat)
    mapping = {}
    for i, v in enumerate(flat):
        if v == 0:
            continue
        if v not in mapping:
            mapping[v] = len(mapping) + 1
        out[i] = mapping[v]
    return out.reshape(cc.shape)


def check_cc3d_numbering():
    """Tiny example for cc3d's numbering (6-connectivity). In raster order the voxels are
    met as: label 4 (piece P), label 9 (piece Q), label 9 again in a separate branch R that
    only joins Q in a later row (a merge, so a union-find provisional label differs), label 4
    in a separate piece S, and label 2 in piece T. Label values are deliberately not in
    appearance order. First-appearance numbering gives P=1, Q(+R)=2, S=3, T=4."""
    t = np.zeros((1, 3, 6), np.uint32)
    t[0, 0, 0] = 4                      # P
    t[0, 0, 2] = 9                      # Q, first voxel of the merged 9 component
    t[0, 0, 4] = 9                      # R (joins Q through row 1)
    t[0, 1, 2:5] = 9                    # the join
    t[0, 1, 0] = 4                      # P continues (face neighbour of (0,0,0))
    t[0, 2, 0] = 2                      # T appears in row 2 ...
    t[0, 0, 5] = 4                      # ... but S appears first (row 0, x=5)
    cc = np.asarray(cc3d.connected_components(t, connectivity=6))
    expected = np.zeros_like(t)
    expected[0, 0, 0] = expected[0, 1, 0] = 1
    expected[0, 0, 2] = expected[0, 0, 4] = 2
    expected[0, 1, 2:5] = 2
    expected[0, 0, 5] = 3
    expected[0, 2, 0] = 4
    assert np.array_equal(first_appearance(cc), expected), "cc3d partition is wrong"
    return bool(np.array_equal(cc, expected))


def relabel6(labels):
    lab, _ = split(labels)
    cc = np.asarray(cc3d.connected_components(lab.astype(np.uint32), connectivity=6))
    fa = first_appearance(cc).astype(np.uint32)
    cc3d_is_first_appearance = bool(np.array_equal(cc, fa))
    # independent partition check: scipy.ndimage.label per label value, 6-connectivity
    struct = ndimage.generate_binary_structure(3, 1)
    ref = np.zeros(lab.shape, np.int64)
    nxt = 0
    for value in np.unique(lab):
        if value == 0:
            continue
        comp, n = ndimage.label(lab == value, structure=struct)
        ref[comp > 0] = comp[comp > 0] + nxt
        nxt += n
    assert np.array_equal(first_appearance(ref), fa), "cc3d partition differs from scipy"
    assert np.array_equal(fa == 0, lab == 0)
    return fa, cc3d_is_first_appearance, int(fa.max())


def boundaries(labels, planar):
    lab, _ = split(labels)
    nbs = [(0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    if not planar:
        nbs += [(1, 0, 0), (-1, 0, 0)]
    out = np.zeros(lab.shape, bool)
    for off in nbs:
        nlab, inside = shifted(lab, off, 1)
        out |= inside & (nlab != lab)
    return (out & (lab != 0)).astype(np.uint8)


def signed_distance(labels, sampling):
    lab, _ = split(labels)
    d = np.zeros(lab.shape, np.float64)
    bg = lab == 0
    assert bg.any() and not bg.all()
    d[bg] = -ndimage.distance_transform_edt(bg, sampling=sampling)[bg]
    for value in np.unique(lab):
        if value == 0:
            continue
        m = lab == value
        assert not m.all(), "edt undefined for a label filling the volume"
        d[m] = ndimage.distance_transform_edt(m, sampling=sampling)[m]
    return np.tanh(d / 8.0).astype(np.float32)


def erode(labels, w):
    lab, _ = split(labels)
    kill = np.zeros(lab.shape, bool)
    for dy in range(-w, w + 1):
        for dx in range(-w, w + 1):
            nlab, inside = shifted(lab, (0, dy, dx), 1)
            kill |= inside & (nlab != lab)
    return np.where(kill, 0, lab).astype(np.uint32)


# ----------------------------------------------------------------------------- main


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "crates", "em-data", "tests", "fixtures", "targets")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out)
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)

    tiny_ok = check_cc3d_numbering()
    try:
        from importlib.metadata import version
        cc3d_version = version("connected-components-3d")
    except Exception:  # pragma: no cover
        cc3d_version = "?"
    print(f"cc3d {cc3d_version}: tiny example first-appearance numbering: {tiny_ok}")

    rng = np.random.default_rng(SEED)
    cases = {"blocks": make_blocks(rng), "cut": make_cut(), "random": make_random(rng)}

    meta = {
        "generator": "tools/make_target_fixtures.py",
        "seed": SEED,
        "offsets": {k: [list(o) for o in v] for k, v in OFFSETS.items()},
        "sdt": {"scale": 8.0, "sampling": {"sdt": [1.0, 1.0, 1.0], "sdt_aniso": [4.0, 1.0, 1.0]}},
        "relabel6_numbering": "first appearance, C-order raster scan, 0 = background",
        "cc3d_version": cc3d_version,
        "cc3d_tiny_example_first_appearance": tiny_ok,
        "cases": [],
    }

    def save(name, arr, sums):
        np.save(os.path.join(out, name + ".npy"), arr)
        key = name
        if arr.dtype.kind == "f":
            sums[key] = float(arr.astype(np.float64).sum())
        else:
            sums[key] = int(arr.astype(np.int64).sum())

    all_first_appearance = tiny_ok
    for case, labels in cases.items():
        sums = {}
        save(f"input_{case}", labels, sums)
        for lst, offs in OFFSETS.items():
            for tag, sign in (("source", 1), ("dest", -1)):
                aff, mask = affinities(labels, offs, sign)
                save(f"aff_{tag}_{lst}_{case}", aff, sums)
                save(f"mask_{tag}_{lst}_{case}", mask, sums)
        rl, cc_fa, k = relabel6(labels)
        all_first_appearance &= cc_fa
        save(f"relabel6_{case}", rl, sums)
        save(f"boundary3d_{case}", boundaries(labels, False), sums)
        save(f"boundary2d_{case}", boundaries(labels, True), sums)
        save(f"sdt_{case}", signed_distance(labels, (1.0, 1.0, 1.0)), sums)
        save(f"sdt_aniso_{case}", signed_distance(labels, (4.0, 1.0, 1.0)), sums)
        for w in (1, 2):
            save(f"erode{w}_{case}", erode(labels, w), sums)
        meta["cases"].append({
            "name": case,
            "shape": list(labels.shape),
            "dtype": "int64",
            "labels": [int(v) for v in np.unique(labels)],
            "components6": k,
            "cc3d_raw_is_first_appearance": cc_fa,
            "sums": sums,
        })
        print(f"{case}: shape {labels.shape}, labels {np.unique(labels).tolist()}, "
              f"{k} components, cc3d first-appearance: {cc_fa}")

    meta["cc3d_first_appearance_everywhere"] = all_first_appearance
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=False)
        f.write("\n")

    # sanity checks on the designed "cut" case
    cut_rl = np.load(os.path.join(out, "relabel6_cut.npy"))
    cut = cases["cut"]
    assert len(np.unique(cut_rl[cut == 5])) == 2, "label 5 must be two pieces"
    assert len(np.unique(cut_rl[cut == 9])) == 3, "label 9 must be three pieces"
    assert len(np.unique(cut_rl[cut == 7])) == 1
    total = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    print(f"wrote {len(os.listdir(out))} files, {total} bytes into {out}")


if __name__ == "__main__":
    main()
