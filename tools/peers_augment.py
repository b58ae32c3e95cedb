#!/usr/bin/env python3
"""Python peer of em-augment's "realistic" and "banis" presets (presets/augment/*.toml).

Each pipeline is written the way a PyTorch Connectomics / MONAI user would write it: MONAI
dictionary transforms (keys "image" and "label", bilinear for the image, nearest for the
label) wherever MONAI has the transform, and numpy / scipy.ndimage for the serial-section EM
defects MONAI lacks (misalignment, missing / lost sections, missing parts, motion and
out-of-focus blur, slice drop, slice roll) and for PyTC-style per-section grayscale and
elastic warps. Every step fires with its preset probability, so a timing covers the same mix
of fired and skipped steps as the Rust side.

Command line (one CPU thread; one JSON line per preset):

    python3 tools/peers_augment.py [--side 128] [--repeats 20] [--presets realistic,banis] [--seed 0]

Install: pip install numpy scipy torch monai
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.ndimage as ndi  # noqa: E402
import torch  # noqa: E402
from monai.transforms import (  # noqa: E402
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Transposed,
)

torch.set_num_threads(1)

KEYS = ["image", "label"]
MODES = ["bilinear", "nearest"]


def as_numpy(x):
    """MONAI hands back (Meta)Tensors; the scipy / numpy steps work on ndarrays."""
    return x.numpy() if isinstance(x, torch.Tensor) else x


def to_numpy(d):
    d["image"], d["label"] = as_numpy(d["image"]), as_numpy(d["label"])
    return d


def pick(rng, n, k, margin=0):
    """k distinct sections in [margin, n - margin)."""
    return rng.choice(np.arange(margin, n - margin), size=k, replace=False)


# ------------------------------------------------------------------ numpy / scipy steps

def elastic(d, rng, sigma=(6.0, 10.0), alpha=(20.0, 60.0)):
    """PyTC-style in-plane elastic warp: one smoothed random (dy, dx) field for all sections."""
    img, lab = d["image"], d["label"]
    _, nz, ny, nx = img.shape
    s, a = rng.uniform(*sigma), rng.uniform(*alpha)
    dy = ndi.gaussian_filter(rng.uniform(-1, 1, (ny, nx)), s, mode="mirror", truncate=3.0) * a
    dx = ndi.gaussian_filter(rng.uniform(-1, 1, (ny, nx)), s, mode="mirror", truncate=3.0) * a
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    coords = np.stack([yy + dy, xx + dx]).astype(np.float32)
    out_img, out_lab = np.empty_like(img), np.empty_like(lab)
    for c in range(img.shape[0]):
        for z in range(nz):
            ndi.map_coordinates(img[c, z], coords, output=out_img[c, z], order=1, mode="mirror")
    for c in range(lab.shape[0]):
        for z in range(nz):
            ndi.map_coordinates(lab[c, z], coords, output=out_lab[c, z], order=0, mode="mirror")
    d["image"], d["label"] = out_img, out_lab
    return d


def section_intensity(d, rng):
    """PyTC Grayscale (3-D mode): per-section multiply/add, contrast, gamma, clip."""
    x = d["image"]
    shape = (1, x.shape[1], 1, 1)
    draw = lambda lo, hi: rng.uniform(lo, hi, shape).astype(np.float32)  # noqa: E731
    x = x * draw(0.9, 1.1) + draw(-0.1, 0.1)
    m = x.mean(axis=(2, 3), keepdims=True)
    x = (x - m) * draw(0.8, 1.2) + m
    x = np.clip(x, 0.0, 1.0) ** draw(0.8, 1.25)
    d["image"] = np.clip(x, 0.0, 1.0, out=x)
    return d


def misalignment(d, rng, displacement=16):
    nz = d["image"].shape[1]
    dy, dx = (int(v) for v in rng.integers(-displacement, displacement + 1, 2))
    if rng.random() < 0.5:  # slip: one section moves
        z0 = int(rng.integers(nz))
        z1 = z0 + 1
    else:  # translation: every section from z0 on moves
        z0, z1 = int(rng.integers(1, nz)), nz
    for k in KEYS:
        a = d[k]
        a[:, z0:z1] = ndi.shift(a[:, z0:z1], (0, 0, dy, dx), order=0, mode="nearest")
    return d


def missing_section(d, rng, n=2, partial=0.5):
    img = d["image"]
    _, nz, ny, nx = img.shape
    for z in pick(rng, nz, n):
        if rng.random() < partial:
            h, w = int(ny * rng.uniform(0.25, 0.75)), int(nx * rng.uniform(0.25, 0.75))
            y0, x0 = rng.integers(ny - h + 1), rng.integers(nx - w + 1)
            img[:, z, y0:y0 + h, x0:x0 + w] = 0
        else:
            img[:, z] = 0
    return d


def lost_section(d, rng, n=2):
    img = d["image"]
    for z in pick(rng, img.shape[1], n, margin=1):
        mode = rng.integers(3)
        if mode == 0:
            img[:, z] = img[:, z - 1]
        elif mode == 1:
            img[:, z] = img[:, z + 1]
        else:
            img[:, z] = 0.5 * (img[:, z - 1] + img[:, z + 1])
    return d


def missing_parts(d, rng, ratio=(0.1, 0.3)):
    img = d["image"]
    _, nz, ny, nx = img.shape
    z = rng.integers(nz)
    side = max(1, int(min(ny, nx) * rng.uniform(*ratio)))
    y0, x0 = rng.integers(ny - side + 1), rng.integers(nx - side + 1)
    img[:, z, y0:y0 + side, x0:x0 + side] = 0
    return d


def motion_blur(d, rng, n=2, kernel=11):
    img = d["image"]
    for z in pick(rng, img.shape[1], n):
        axis = -1 if rng.random() < 0.5 else -2
        img[:, z] = ndi.uniform_filter1d(img[:, z], kernel, axis=axis, mode="mirror")
    return d


def out_of_focus(d, rng, n=2, sigma=(1.0, 3.0)):
    img = d["image"]
    for z in pick(rng, img.shape[1], n):
        s = rng.uniform(*sigma)
        img[:, z] = ndi.gaussian_filter(img[:, z], (0, s, s), mode="mirror", truncate=3.0)
    return d


DEFECTS = [misalignment, missing_section, lost_section, missing_parts, motion_blur, out_of_focus]


def slice_drop(d, rng, p_slice=0.05):
    img = d["image"]
    axis = 1 + rng.integers(3)
    hit = np.flatnonzero(rng.random(img.shape[axis]) < p_slice)
    np.moveaxis(img, axis, 0)[hit] = 0  # view: zeroes the slices in place
    return d


def slice_roll(d, rng, p_slice=0.05, max_shift=10):
    axis = 1 + rng.integers(3)
    for i in range(d["image"].shape[axis]):
        if rng.random() >= p_slice:
            continue
        shift = tuple(int(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
        for k in KEYS:
            sl = np.moveaxis(d[k], axis, 0)[i]  # (C, a, b) view of slice i
            sl[...] = np.roll(sl, shift, axis=(1, 2))
    return d


# ------------------------------------------------------------------------------ pipelines

class Pipeline:
    """One preset: MONAI transforms (own probabilities) interleaved with numpy / scipy steps."""

    def __init__(self, preset):
        self.preset = preset
        flips = [RandFlipd(KEYS, prob=0.5, spatial_axis=a) for a in range(3)]
        if preset == "realistic":
            self.flips = flips
            self.rot = [RandRotate90d(KEYS, prob=0.75, max_k=3, spatial_axes=(1, 2))]
            # MONAI's first 3-D angle turns the (y, x) plane; shear coefficient 3 is y←x and
            # 5 is x←y (monai.transforms.utils.create_shear).
            self.affine = RandAffined(
                KEYS, prob=0.3, mode=MODES, padding_mode="reflection",
                rotate_range=(np.pi, 0.0, 0.0), scale_range=(0.0, 0.1, 0.1),
                shear_range=(0.0, 0.0, 0.0, 0.1, 0.0, 0.1),
            )
            self.noise = RandGaussianNoised("image", prob=1.0, mean=0.0, std=0.05)
        elif preset == "banis":
            self.flips = flips
            self.rot = [RandRotate90d(KEYS, prob=0.75, max_k=3, spatial_axes=ax)
                        for ax in ((1, 2), (0, 2), (0, 1))]
            self.scale = RandScaleIntensityd("image", factors=0.1, prob=1.0)
            self.shift = RandShiftIntensityd("image", offsets=0.1, prob=1.0)
            self.noise = RandGaussianNoised("image", prob=0.5, mean=0.0, std=0.5)
            self.affine = RandAffined(
                KEYS, prob=0.5, mode=MODES, padding_mode="reflection",
                rotate_range=(np.pi,) * 3, scale_range=(0.2,) * 3, shear_range=(0.5,) * 6,
            )
        else:
            raise ValueError(f"unknown preset {preset!r}")
        self.monai = self.flips + self.rot + [self.affine, self.noise]
        if preset == "banis":
            self.monai += [self.scale, self.shift]

    def __call__(self, d, seed):
        rng = np.random.default_rng(seed)
        for t in self.monai:
            t.set_random_state(seed=int(rng.integers(2**31)))
        d = self.realistic(d, rng) if self.preset == "realistic" else self.banis(d, rng)
        # MONAI turns uint32 labels into int64 tensors (float32 after RandAffined); hand back
        # what came in, as the Rust side does.
        return {"image": as_numpy(d["image"]), "label": as_numpy(d["label"]).astype(np.uint32)}

    def realistic(self, d, rng):
        for t in self.flips + self.rot:
            d = t(d)
        d = self.affine(d)
        d = to_numpy(d)
        if rng.random() < 0.3:
            d = elastic(d, rng)
        if rng.random() < 0.5:
            d = section_intensity(d, rng)
        if rng.random() < 0.5:
            d = DEFECTS[rng.integers(len(DEFECTS))](d, rng)
        if rng.random() < 0.2:
            d = to_numpy(self.noise(d))
            np.clip(d["image"], 0.0, 1.0, out=d["image"])
        return d

    def banis(self, d, rng):
        perm = list(itertools.permutations(range(3)))[rng.integers(6)]
        if perm != (0, 1, 2):
            d = Transposed(KEYS, indices=(0, *(1 + a for a in perm)))(d)
        for t in self.rot + self.flips:
            d = t(d)
        # transposes and quarter turns are strided torch views; the numpy steps write in place
        d = {k: np.ascontiguousarray(as_numpy(v)) for k, v in d.items()}
        if rng.random() < 0.5:
            d = slice_drop(d, rng)
        if rng.random() < 0.5:
            d = slice_roll(d, rng)
        if rng.random() < 0.5:
            d = self.shift(self.scale(d))
        d = self.noise(d)
        return self.affine(d)


# ---------------------------------------------------------------------------- benchmark

def make_sample(side, seed, block=8):
    rng = np.random.default_rng(seed)
    image = rng.random((1, side, side, side), dtype=np.float32)
    nb = -(-side // block)
    ids = np.arange(1, nb**3 + 1, dtype=np.uint32).reshape(nb, nb, nb)
    label = ids.repeat(block, 0).repeat(block, 1).repeat(block, 2)[:side, :side, :side]
    return image, np.ascontiguousarray(label)


def bench(preset, side, repeats, seed):
    image, label = make_sample(side, seed)
    pipe = Pipeline(preset)

    def fresh():
        # MONAI dictionary transforms want channel-first arrays, labels included.
        return {"image": image.copy(), "label": label[None].copy()}

    out = pipe(fresh(), seed)  # warm-up (untimed)
    assert tuple(out["image"].shape) == (1, side, side, side), out["image"].shape
    assert tuple(out["label"].shape) == (1, side, side, side), out["label"].shape
    times = []
    for i in range(repeats):
        d = fresh()
        t0 = time.perf_counter()
        pipe(d, seed + 1 + i)
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "preset": preset,
        "side": side,
        "repeats": repeats,
        "ms_per_patch": round(float(np.mean(times)), 3),
        "min_ms": round(float(np.min(times)), 3),
        "implementation": "monai+scipy",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--presets", default="realistic,banis")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for preset in args.presets.split(","):
        print(json.dumps(bench(preset.strip(), args.side, args.repeats, args.seed)), flush=True)


if __name__ == "__main__":
    main()
