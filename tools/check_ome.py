#!/usr/bin/env python3
"""Checks OME-Zarr pyramids written by em-io with ome-zarr-py and zarr-python.

Usage: check_ome.py DIR

DIR holds `cases.json`, a list of {"name", "kind" ("image" | "labels"), "zarr_version",
"voxel_size" [z, y, x], "levels", "labels" [names]}, and for each case `NAME.zarr` (the
pyramid) and `NAME.npy` (its level 0); for each label name L, `NAME.zarr/labels/L` and
`NAME.L.npy`. For every pyramid this script

- opens it with ome_zarr.io.parse_url + ome_zarr.reader.Reader and checks the axes, the
  number of levels, every level's shape and its scale and translation transforms, which
  it recomputes from the voxel size: each level halves y and x while the z side of the
  voxels is at least twice the in-plane side, and halves z, y and x otherwise (a channel
  axis `c` is never reduced); translation = level-0 voxel size x (factor - 1) / 2;
- opens it with zarr-python and checks the OME version, each level's dtype and axis
  names (`dimension_names` on v3, `_ARRAY_DIMENSIONS` on v2) and `dimension_units`;
- compares level 0 with the .npy and every further level with the previous one reduced
  in numpy: images by the window mean (integers rounded half away from zero), labels by
  the most frequent value of each window, ties to the smallest (collections.Counter);
- for label images under `labels/`, checks that the parent's `labels` list names them and
  that ome-zarr-py reads them as labels.

Prints one line per pyramid and `N ok` (N = number of cases) when everything holds.
"""

import json
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader


def steps(voxel, levels):
    """Per-level factors (z, y, x) from the previous level, first one (1, 1, 1)."""
    out = [(1, 1, 1)]
    v = list(voxel)
    for _ in range(1, levels):
        f = (1, 2, 2) if v[0] >= 2 * max(v[1], v[2]) else (2, 2, 2)
        v = [a * b for a, b in zip(v, f)]
        out.append(f)
    return out


def windows(a, f):
    """Yields (output index, window values) of one reduction of a (C, Z, Y, X) array."""
    c, z, y, x = a.shape
    for ci in range(c):
        for oz in range(-(-z // f[0])):
            for oy in range(-(-y // f[1])):
                for ox in range(-(-x // f[2])):
                    w = a[
                        ci,
                        oz * f[0] : (oz + 1) * f[0],
                        oy * f[1] : (oy + 1) * f[1],
                        ox * f[2] : (ox + 1) * f[2],
                    ]
                    yield (ci, oz, oy, ox), w.ravel()


def reduce(a, f, kind):
    """One pyramid step of a (C, Z, Y, X) array."""
    c, z, y, x = a.shape
    shape = (c, -(-z // f[0]), -(-y // f[1]), -(-x // f[2]))
    if kind == "labels":
        out = np.zeros(shape, dtype=a.dtype)
        for ix, w in windows(a, f):
            counts = Counter(w.tolist())
            out[ix] = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        return out
    # Sum and count by window offset, edge windows holding only what is there.
    total = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape, dtype=np.float64)
    for dz in range(f[0]):
        for dy in range(f[1]):
            for dx in range(f[2]):
                part = a[:, dz :: f[0], dy :: f[1], dx :: f[2]].astype(np.float64)
                sl = (slice(None),) + tuple(slice(0, n) for n in part.shape[1:])
                total[sl] += part
                count[sl] += 1
    mean = total / count
    if np.issubdtype(a.dtype, np.integer):
        rounded = np.sign(mean) * np.floor(np.abs(mean) + 0.5)
        info = np.iinfo(a.dtype)
        return np.clip(rounded, info.min, info.max).astype(a.dtype)
    return mean.astype(a.dtype)


def location(node):
    """The path of an ome-zarr reader node (its str() adds a ` [zgroup]` tag)."""
    return str(node.zarr).split(" [")[0].rstrip("/")


def fail(msg):
    raise AssertionError(msg)


def check_pyramid(path, level0, kind, zarr_version, voxel, levels, label_of=None):
    ndim = level0.ndim
    spatial = ["z", "y", "x"]
    names = (["c"] if ndim == 4 else []) + spatial

    # ome-zarr-py
    loc = parse_url(str(path))
    if loc is None:
        fail(f"{path}: ome-zarr does not recognise it")
    want_version = "0.4" if zarr_version == 2 else "0.5"
    if str(loc.version) != want_version:
        fail(f"{path}: ome-zarr reads version {loc.version}, expected {want_version}")
    # A label image brings its parent image along: pick the node of `path` itself.
    nodes = [nd for nd in Reader(loc)() if Path(location(nd)).resolve() == path.resolve()]
    if len(nodes) != 1:
        fail(f"{path}: ome-zarr gives {len(nodes)} nodes for it")
    node = nodes[0]
    if not any(isinstance(s, Multiscales) for s in node.specs):
        fail(f"{path}: not read as a multiscale image")
    if label_of is not None and not any(isinstance(s, Label) for s in node.specs):
        fail(f"{path}: not read as a label image")
    axes = node.metadata["axes"]
    if [a["name"] for a in axes] != names:
        fail(f"{path}: axes {axes}")
    for a in axes:
        want = ("channel", None) if a["name"] == "c" else ("space", "nanometer")
        if (a.get("type"), a.get("unit")) != want:
            fail(f"{path}: axis {a}")
    if len(node.data) != levels:
        fail(f"{path}: {len(node.data)} levels, expected {levels}")
    transforms = node.metadata["coordinateTransformations"]

    factor = [1, 1, 1]
    shape = list(level0.shape)
    lead = [1.0] if ndim == 4 else []
    lead0 = [0.0] if ndim == 4 else []
    for k, f in enumerate(steps(voxel, levels)):
        factor = [a * b for a, b in zip(factor, f)]
        shape = shape[: ndim - 3] + [-(-s // g) for s, g in zip(shape[ndim - 3 :], f)]
        if list(node.data[k].shape) != shape:
            fail(f"{path} level {k}: shape {node.data[k].shape}, expected {shape}")
        t = {d["type"]: d for d in transforms[k]}
        scale = lead + [v * g for v, g in zip(voxel, factor)]
        translation = lead0 + [v * (g - 1) / 2 for v, g in zip(voxel, factor)]
        if not np.allclose(t["scale"]["scale"], scale, rtol=1e-12, atol=0):
            fail(f"{path} level {k}: scale {t['scale']}, expected {scale}")
        if not np.allclose(t["translation"]["translation"], translation, rtol=1e-12, atol=1e-12):
            fail(f"{path} level {k}: translation {t['translation']}, expected {translation}")

    # zarr-python
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    fields = attrs["ome"] if zarr_version == 3 else attrs
    if zarr_version == 3 and fields.get("version") != "0.5":
        fail(f"{path}: ome version {fields.get('version')}")
    if zarr_version == 2 and fields["multiscales"][0].get("version") != "0.4":
        fail(f"{path}: multiscales version {fields['multiscales'][0].get('version')}")
    if (kind == "labels" and np.issubdtype(level0.dtype, np.integer)) != ("image-label" in fields):
        fail(f"{path}: image-label present: {'image-label' in fields}")
    if label_of is not None and fields["image-label"].get("source", {}).get("image") != "../../":
        fail(f"{path}: image-label source {fields['image-label']}")

    prev = level0.reshape((1,) + level0.shape) if ndim == 3 else level0
    for k, f in enumerate(steps(voxel, levels)):
        arr = group[str(k)]
        if arr.metadata.zarr_format != zarr_version:
            fail(f"{path}/{k}: zarr format {arr.metadata.zarr_format}")
        dims = (
            list(arr.metadata.dimension_names)
            if zarr_version == 3
            else list(arr.attrs["_ARRAY_DIMENSIONS"])
        )
        if dims != names:
            fail(f"{path}/{k}: dimension names {dims}")
        level_voxel = [v * g for v, g in zip(voxel, np.prod(steps(voxel, k + 1), axis=0))]
        units = ([None] if ndim == 4 else []) + [f"{v:g} nm" for v in level_voxel]
        if list(arr.attrs["dimension_units"]) != units:
            fail(f"{path}/{k}: dimension_units {arr.attrs['dimension_units']}, expected {units}")
        got = arr[...]
        if got.dtype != level0.dtype:
            fail(f"{path}/{k}: dtype {got.dtype}, expected {level0.dtype}")
        want = prev if k == 0 else reduce(prev, f, kind)
        want_nd = want.reshape(want.shape[1:]) if ndim == 3 else want
        if np.issubdtype(got.dtype, np.floating):
            ok = np.allclose(got, want_nd, rtol=1e-6, atol=1e-7)
        else:
            ok = np.array_equal(got, want_nd)
        if not ok:
            bad = np.argwhere(got != want_nd)[:5].tolist()
            fail(f"{path}/{k}: values differ from the numpy {kind} reduction at {bad}")
        # The next level is reduced from this one as stored.
        prev = got.reshape((1,) + got.shape) if ndim == 3 else got
        # dask arrays from ome-zarr hold the same values
        if not np.array_equal(np.asarray(node.data[k]), got, equal_nan=True):
            fail(f"{path}/{k}: ome-zarr and zarr-python disagree")
    return len(node.data)


def main():
    # ome-zarr logs a warning for label images without a source image and for every
    # version it did not guess first; neither is a finding here.
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)
    root = Path(sys.argv[1])
    cases = json.loads((root / "cases.json").read_text())
    checked = 0
    for case in cases:
        name = case["name"]
        path = root / f"{name}.zarr"
        level0 = np.load(root / f"{name}.npy")
        n = check_pyramid(
            path, level0, case["kind"], case["zarr_version"], case["voxel_size"], case["levels"]
        )
        for label in case["labels"]:
            group = zarr.open_group(str(path / "labels"), mode="r")
            attrs = dict(group.attrs)
            listed = (attrs["ome"] if case["zarr_version"] == 3 else attrs)["labels"]
            if label not in listed:
                fail(f"{path}/labels: {label} not listed in {listed}")
            nodes = list(Reader(parse_url(str(path)))())
            found = [location(nd) for nd in nodes]
            if not any(f.endswith(f"labels/{label}") for f in found):
                fail(f"{path}: ome-zarr does not find labels/{label} among {found}")
            check_pyramid(
                path / "labels" / label,
                np.load(root / f"{name}.{label}.npy"),
                "labels",
                case["zarr_version"],
                case["voxel_size"],
                case["levels"],
                label_of=path,
            )
        print(f"{name}: {n} levels, zarr v{case['zarr_version']}, {case['kind']} ok")
        checked += 1
    print(f"{checked} ok")


if __name__ == "__main__":
    main()
