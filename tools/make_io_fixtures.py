#!/usr/bin/env python3
"""Write the small reference files that em-io's tests read, with the Python libraries
connectomics users write them with (numpy, tifffile, zarr-python 3 in v2 and v3 format,
h5py). The files are committed under crates/em-io/tests/fixtures/; rerun this script to
regenerate them:

    pip install -r tools/requirements.txt
    python3 tools/make_io_fixtures.py crates/em-io/tests/fixtures

Every array is a deterministic function of its index (see `pattern`), so the Rust tests
recompute the expected values instead of trusting a second file. `manifest.json` lists
each file with its dtype and shape.
"""
import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import tifffile
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec


def pattern(shape, dtype):
    """base = index · weights, weights (17, 3, 1) for 3-D, (1009, 131, 17, 3) for 4-D; then
    reduced per dtype. crates/em-io/tests/common/mod.rs computes the same values."""
    idx = np.indices(shape).reshape(len(shape), -1)
    weights = [131, 17, 3, 1][-len(shape):] if len(shape) <= 3 else [1009, 131, 17, 3]
    base = sum(w * i for w, i in zip(weights, idx)).reshape(shape)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return (base % 3 == 0)
    if dt.kind == "u":
        return (base % min(np.iinfo(dt).max, 251)).astype(dt)
    if dt.kind == "i":
        return ((base % 200) - 100).astype(dt)
    return ((base % 97) / 7.0 - 3.0).astype(dt)


def main(out):
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest = []

    def add(name, dtype, shape, **extra):
        manifest.append({"file": name, "dtype": np.dtype(dtype).name, "shape": list(shape), **extra})

    shape = (5, 6, 7)
    # npy: every supported dtype, C order; one Fortran-order and one big-endian file.
    for dt in ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
               "float16", "float32", "float64"]:
        name = f"npy_{dt}.npy"
        np.save(out / name, pattern(shape, dt))
        add(name, dt, shape)
    np.save(out / "npy_float32_fortran.npy", np.asfortranarray(pattern(shape, "float32")))
    add("npy_float32_fortran.npy", "float32", shape)
    np.save(out / "npy_uint16_bigendian.npy", pattern(shape, "uint16").astype(">u2"))
    add("npy_uint16_bigendian.npy", "uint16", shape)
    np.save(out / "npy_float16_bigendian.npy", pattern(shape, "float16").astype(">f2"))
    add("npy_float16_bigendian.npy", "float16", shape)
    np.save(out / "npy_float64_bigendian_fortran.npy", np.asfortranarray(pattern(shape, "float64").astype(">f8")))
    add("npy_float64_bigendian_fortran.npy", "float64", shape)
    np.save(out / "npy_affinities_c3.npy", pattern((3, 4, 5, 6), "float32"))
    add("npy_affinities_c3.npy", "float32", (3, 4, 5, 6))

    # TIFF: tifffile multi-page stacks, ImageJ-style 8/16-bit and plain float/int, compressed.
    for dt in ["uint8", "uint16", "float32", "int16", "uint32"]:
        name = f"tiff_{dt}.tif"
        tifffile.imwrite(out / name, pattern(shape, dt))
        add(name, dt, shape)
    tifffile.imwrite(out / "tiff_uint8_imagej.tif", pattern(shape, "uint8"), imagej=True)
    add("tiff_uint8_imagej.tif", "uint8", shape)
    tifffile.imwrite(out / "tiff_uint16_imagej.tif", pattern(shape, "uint16"), imagej=True)
    add("tiff_uint16_imagej.tif", "uint16", shape)
    tifffile.imwrite(out / "tiff_uint16_deflate.tif", pattern(shape, "uint16"), compression="zlib")
    add("tiff_uint16_deflate.tif", "uint16", shape)
    tifffile.imwrite(out / "tiff_uint8_lzw.tif", pattern(shape, "uint8"), compression="lzw")
    add("tiff_uint8_lzw.tif", "uint8", shape)
    tifffile.imwrite(out / "tiff_float32_bigtiff.tif", pattern(shape, "float32"), bigtiff=True)
    add("tiff_float32_bigtiff.tif", "float32", shape)
    tifffile.imwrite(out / "tiff_uint8_single_page.tif", pattern((1,) + shape[1:], "uint8")[0])
    add("tiff_uint8_single_page.tif", "uint8", (1,) + shape[1:])

    # Colour pages are refused (not guessed at): a tiny RGB stack for the error test.
    tifffile.imwrite(out / "bad_rgb.tif", np.zeros((2, 4, 4, 3), np.uint8), photometric="rgb")

    # zarr v2 and v3 via zarr-python 3, several codecs, chunks that do not divide the shape.
    chunks = (2, 4, 4)
    v2 = zarr.open_group(out / "v2.zarr", mode="w", zarr_format=2)
    for name, dt, comp in [("raw_zstd", "uint8", {"id": "zstd", "level": 3}),
                           ("labels_blosc", "uint64", {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1}),
                           ("aff_gzip", "float32", {"id": "gzip", "level": 5}),
                           ("mask_none", "bool", None)]:
        import numcodecs
        compressor = numcodecs.get_codec(comp) if comp else None
        a = v2.create_array(name, shape=shape, chunks=chunks, dtype=dt, compressors=compressor,
                            fill_value=0)
        a[...] = pattern(shape, dt)
        add(f"v2.zarr/{name}", dt, shape, zarr_format=2)
    v3 = zarr.open_group(out / "v3.zarr", mode="w", zarr_format=3)
    for name, dt, comp in [("raw_zstd", "uint8", ZstdCodec(level=3)),
                           ("labels_gzip", "uint32", GzipCodec(level=5)),
                           ("aff_blosc", "float32", BloscCodec(cname="zstd", clevel=3)),
                           ("int_none", "int16", None)]:
        a = v3.create_array(name, shape=shape, chunks=chunks, dtype=dt,
                            compressors=[comp] if comp else None, fill_value=0)
        a[...] = pattern(shape, dt)
        add(f"v3.zarr/{name}", dt, shape, zarr_format=3)
    sub = v3.create_group("volumes")
    a = sub.create_array("labels", shape=shape, chunks=chunks, dtype="uint32", fill_value=0)
    a[...] = pattern(shape, "uint32")
    add("v3.zarr/volumes/labels", "uint32", shape, zarr_format=3)
    # A sharded v3 array: chunks of (2,4,4) inside shards of (4,4,8).
    a = v3.create_array("sharded", shape=shape, chunks=chunks, shards=(4, 4, 8), dtype="uint16",
                        fill_value=0)
    a[...] = pattern(shape, "uint16")
    add("v3.zarr/sharded", "uint16", shape, zarr_format=3)
    # A bare v3 array (no group around it).
    a = zarr.create_array(out / "bare_v3.zarr", shape=shape, chunks=chunks, dtype="float64",
                          fill_value=0)
    a[...] = pattern(shape, "float64")
    add("bare_v3.zarr", "float64", shape, zarr_format=3)

    # HDF5 via h5py: PyTC layout (`main`), nested groups, chunked + gzip, bool.
    with h5py.File(out / "pytc.h5", "w") as f:
        f.create_dataset("main", data=pattern(shape, "uint8"))
        f.create_dataset("volumes/labels/neuron_ids", data=pattern(shape, "uint64"),
                         chunks=chunks, compression="gzip")
        f.create_dataset("aff", data=pattern((3,) + shape, "float32"), chunks=(1,) + chunks)
        f.create_dataset("mask", data=pattern(shape, "bool"))
        f.create_dataset("signed", data=pattern(shape, "int32"))
    for key, dt, shp in [("main", "uint8", shape), ("volumes/labels/neuron_ids", "uint64", shape),
                         ("aff", "float32", (3,) + shape), ("mask", "bool", shape),
                         ("signed", "int32", shape)]:
        add(f"pytc.h5/{key}", dt, shp)

    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(manifest)} fixtures to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/em-io/tests/fixtures")
