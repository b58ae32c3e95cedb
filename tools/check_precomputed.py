#!/usr/bin/env python3
"""Check that the reference libraries read the neuroglancer precomputed volumes em-io wrote.

Usage: check_precomputed.py DIR      (run by crates/em-io/tests/precomputed.rs)

DIR/manifest.json lists the volumes: [{"name": "a.precomputed", "expected": "a.npy"}, ...];
each expected array is (Z, Y, X) or (C, Z, Y, X). For every volume:
- tensorstore's neuroglancer_precomputed driver reads it whole and equal. Unsharded
  gzip chunks are stored as NAME.gz (CloudVolume's convention), which a web server sends as
  NAME with Content-Encoding: gzip; tensorstore reads files only, so a copy with the chunks
  decompressed under their plain names stands in for that server.
- compressed_segmentation chunks (unsharded) are decoded by the `compressed_segmentation`
  package and must equal the expected values, and re-encoding the expected values with it
  must give our bytes exactly (channel by channel).
Prints one line per volume; exits 1 on any difference.
"""
import gzip
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import compressed_segmentation as cseg
import numpy as np
import tensorstore as ts

CHUNK = re.compile(r"^(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)$")


def read_tensorstore(path):
    store = ts.open({
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(path)},
    }, read=True).result()
    data = np.asarray(store.read().result())  # x, y, z, channel
    return np.transpose(data, (3, 2, 1, 0))  # channel, z, y, x


def ungzipped_copy(path, tmp):
    copy = Path(tmp) / path.name
    shutil.copytree(path, copy)
    for gz in copy.rglob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    return copy


def check_cseg_chunks(path, info, want):
    """Decodes and re-encodes every unsharded compressed_segmentation chunk."""
    scale = info["scales"][0]
    if scale.get("encoding") != "compressed_segmentation" or "sharding" in scale:
        return 0
    block = tuple(scale["compressed_segmentation_block_size"])
    offset = scale["voxel_offset"]
    dtype = np.dtype(info["data_type"])
    checked = 0
    for f in sorted((path / scale["key"]).iterdir()):
        data = f.read_bytes()
        name = f.name
        if name.endswith(".gz"):
            data, name = gzip.decompress(data), name[:-3]
        m = CHUNK.match(name)
        if not m:
            raise AssertionError(f"unexpected file {f}")
        x0, x1, y0, y1, z0, z1 = (int(v) for v in m.groups())
        x0, x1 = x0 - offset[0], x1 - offset[0]
        y0, y1 = y0 - offset[1], y1 - offset[1]
        z0, z1 = z0 - offset[2], z1 - offset[2]
        part = want[:, z0:z1, y0:y1, x0:x1]  # c, z, y, x
        size = (x1 - x0, y1 - y0, z1 - z0, part.shape[0])
        got = cseg.decompress(data, size, dtype, block, order="F")  # x, y, z, c
        got = np.asarray(got).reshape(size, order="F")
        if not np.array_equal(np.transpose(got, (3, 2, 1, 0)), part):
            raise AssertionError(f"{f}: compressed_segmentation decodes other values")
        # The reference encoder crashes on several channels (compressed_segmentation
        # 2.3.3), so each channel's stream is compared with its single-channel encoding.
        channels = part.shape[0]
        offsets = list(np.frombuffer(data[:4 * channels], "<u4")) + [len(data) // 4]
        for c in range(channels):
            ref = cseg.compress(np.asfortranarray(np.transpose(part[c], (2, 1, 0))), block,
                                order="F")
            if bytes(ref)[4:] != data[4 * offsets[c]:4 * offsets[c + 1]]:
                raise AssertionError(f"{f}: channel {c} bytes differ from the reference encoder's")
        checked += 1
    return checked


def main():
    root = Path(sys.argv[1])
    failures = []
    for entry in json.loads((root / "manifest.json").read_text()):
        path = root / entry["name"]
        want = np.load(root / entry["expected"])
        want4 = want if want.ndim == 4 else want[np.newaxis]
        try:
            info = json.loads((path / "info").read_text())
            with tempfile.TemporaryDirectory() as tmp:
                readable = ungzipped_copy(path, tmp) if any(path.rglob("*.gz")) else path
                got = read_tensorstore(readable)
            if got.dtype != want.dtype or not np.array_equal(got, want4):
                raise AssertionError(
                    f"tensorstore reads {got.dtype}{list(got.shape)}, expected "
                    f"{want.dtype}{list(want4.shape)} or other values")
            n = check_cseg_chunks(path, info, want4)
            extra = f", {n} compressed_segmentation chunks byte-identical" if n else ""
            print(f"ok {entry['name']}{extra}")
        except Exception as e:  # noqa: BLE001 - report every volume, then fail
            failures.append(f"{entry['name']}: {e}")
            print(f"FAIL {entry['name']}: {e}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
