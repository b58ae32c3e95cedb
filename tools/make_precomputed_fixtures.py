#!/usr/bin/env python3
"""Write the neuroglancer precomputed volumes that em-io's tests read, with tensorstore's
`neuroglancer_precomputed` driver (the reference writer), into
crates/em-io/tests/fixtures/precomputed/. Rerun to regenerate them:

    pip install -r tools/requirements.txt
    python3 tools/make_precomputed_fixtures.py crates/em-io/tests/fixtures/precomputed

Each volume NAME.precomputed comes with NAME.npy, the array tensorstore was given, in our
axis order: (Z, Y, X), or (C, Z, Y, X) with channels. `manifest.json` lists them. The
volumes are small (11 x 21 x 26 voxels, z, y, x) and their chunk and block sizes do not
divide them, so edge chunks and partial blocks are exercised; the segmentations have an
empty region (chunks tensorstore does not store, read as 0), ids above 2^32 and blocks
with one to a few hundred distinct ids (every compressed_segmentation bit width up to 16).
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorstore as ts

SHAPE = (11, 21, 26)  # z, y, x


def image(dtype, channels=None, seed=1):
    rng = np.random.default_rng(seed)
    shape = SHAPE if channels is None else (channels,) + SHAPE
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(size=shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)


def segmentation(dtype, seed=2):
    """Piecewise-constant ids, an empty corner, and a noisy patch with many ids."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE)
    cell = (z // 3) * 1000 + (y // 4) * 50 + (x // 5)
    ids = rng.permutation(4096)[cell % 4096].astype(np.uint64) + 1
    if np.dtype(dtype) == np.uint64:
        ids = ids * np.uint64(0x1_0000_0001)  # ids above 2^32
    ids[:, :9, :9] = 0  # whole empty chunks: not stored
    ids[4:9, 10:19, 12:24] = rng.integers(1, 300, size=(5, 9, 12))  # many ids per block
    ids[0, 20, 25] = 7  # one different voxel at the far corner
    return ids.astype(dtype)


def write(root, name, data, *, layer, encoding, chunk, block=None, sharding=None,
          offset=(0, 0, 0), resolution=(4.0, 5.0, 40.0)):
    """Writes `data` ((Z, Y, X) or (C, Z, Y, X)) with tensorstore; chunk, block, offset and
    resolution are x, y, z as in `info`."""
    channels = 1 if data.ndim == 3 else data.shape[0]
    vol = data if data.ndim == 4 else data[np.newaxis]
    scale = {
        "size": list(SHAPE[::-1]),
        "encoding": encoding,
        "chunk_size": list(chunk),
        "resolution": list(resolution),
        "voxel_offset": list(offset),
    }
    if block:
        scale["compressed_segmentation_block_size"] = list(block)
    if sharding:
        scale["sharding"] = {"@type": "neuroglancer_uint64_sharded_v1", **sharding}
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(root / f"{name}.precomputed")},
            "scale_metadata": scale,
            "multiscale_metadata": {
                "type": layer,
                "data_type": data.dtype.name,
                "num_channels": channels,
            },
        },
        create=True,
    ).result()
    # tensorstore's domain is x, y, z, channel (offset by voxel_offset).
    store[...] = np.transpose(vol, (3, 2, 1, 0))
    np.save(root / f"{name}.npy", data)
    return {
        "name": f"{name}.precomputed",
        "expected": f"{name}.npy",
        "dtype": data.dtype.name,
        "shape": list(data.shape),
        "encoding": encoding,
        "sharded": sharding is not None,
        "resolution_zyx": list(resolution[::-1]),
        "voxel_offset_zyx": list(offset[::-1]),
    }


def main(out):
    root = Path(out)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    murmur = {"preshift_bits": 1, "hash": "murmurhash3_x86_128", "minishard_bits": 2,
              "shard_bits": 2, "minishard_index_encoding": "gzip", "data_encoding": "gzip"}
    identity = {"preshift_bits": 2, "hash": "identity", "minishard_bits": 1,
                "shard_bits": 3, "minishard_index_encoding": "raw", "data_encoding": "raw"}
    manifest = [
        write(root, "raw_uint8", image("uint8"), layer="image", encoding="raw",
              chunk=(8, 8, 4), offset=(3, -2, 5)),
        write(root, "raw_int16", image("int16"), layer="image", encoding="raw",
              chunk=(32, 32, 32)),
        write(root, "raw_float32", image("float32"), layer="image", encoding="raw",
              chunk=(16, 8, 5)),
        write(root, "raw_uint32", segmentation("uint32"), layer="segmentation",
              encoding="raw", chunk=(10, 7, 3)),
        write(root, "raw_uint64", segmentation("uint64"), layer="segmentation",
              encoding="raw", chunk=(9, 9, 4)),
        write(root, "cseg_uint32", segmentation("uint32"), layer="segmentation",
              encoding="compressed_segmentation", chunk=(16, 16, 8), block=(8, 8, 8)),
        write(root, "cseg_uint64", segmentation("uint64"), layer="segmentation",
              encoding="compressed_segmentation", chunk=(9, 9, 4), block=(4, 3, 2),
              offset=(-7, 0, 11)),
        write(root, "sharded_murmur_gzip_uint16", image("uint16"), layer="image",
              encoding="raw", chunk=(8, 8, 4), sharding=murmur),
        write(root, "sharded_murmur_gzip_cseg_uint64", segmentation("uint64"),
              layer="segmentation", encoding="compressed_segmentation", chunk=(8, 8, 4),
              block=(8, 8, 8), sharding=murmur),
        write(root, "sharded_identity_cseg_uint32", segmentation("uint32"),
              layer="segmentation", encoding="compressed_segmentation", chunk=(8, 8, 4),
              block=(4, 4, 4), sharding=identity),
        write(root, "multichannel_uint8", image("uint8", channels=3), layer="image",
              encoding="raw", chunk=(8, 8, 4)),
        write(root, "multichannel_cseg_uint32",
              np.stack([segmentation("uint32", seed=s) for s in (3, 4)]),
              layer="segmentation", encoding="compressed_segmentation", chunk=(16, 16, 8),
              block=(8, 8, 8)),
    ]
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"{len(manifest)} volumes, {total} bytes in {root}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/em-io/tests/fixtures/precomputed")
