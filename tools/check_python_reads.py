#!/usr/bin/env python3
"""Check that numpy, tifffile, zarr-python and h5py read files em-io wrote.

Usage: check_python_reads.py DIR NAME:DTYPE ...   (run by crates/em-io/tests/roundtrip.rs)
Each file must hold make_io_fixtures.pattern((5, 6, 7), DTYPE) exactly.
"""
import sys
from pathlib import Path

import h5py
import numpy as np
import tifffile
import zarr

sys.path.insert(0, str(Path(__file__).parent))
from make_io_fixtures import pattern  # noqa: E402


def load(root, name):
    if name.endswith(".npy"):
        return np.load(root / name)
    if name.endswith(".tif"):
        return tifffile.imread(root / name)
    if ".zarr/" in name:
        store, key = name.split(".zarr/")
        return zarr.open_array(root / f"{store}.zarr", path=key, mode="r")[...]
    if ".h5/" in name:
        file, key = name.split(".h5/")
        with h5py.File(root / f"{file}.h5", "r") as f:
            return f[key][...]
    raise ValueError(name)


def main():
    root = Path(sys.argv[1])
    failures = []
    for item in sys.argv[2:]:
        name, dtype = item.rsplit(":", 1)
        got = load(root, name)
        want = pattern((5, 6, 7), dtype)
        if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
            failures.append(f"{name}: got {got.dtype}{got.shape}, want {want.dtype}{want.shape}")
    for f in failures:
        print("FAIL", f)
    print(f"{len(sys.argv) - 2 - len(failures)} ok, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
