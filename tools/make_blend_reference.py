#!/usr/bin/env python3
"""Prints MONAI's Gaussian blend weights (compute_importance_map, sigma_scale 0.125) at the
positions crates/em-models/tests/inference.rs checks, and the share of a 64^3 window that
sits on MONAI's 1e-3 floor.

    pip install monai torch && python3 tools/make_blend_reference.py
"""
from monai.data.utils import compute_importance_map

CASES = [((6, 8, 10), [(0, 0, 0), (3, 4, 5), (3, 0, 5), (3, 4, 0), (1, 2, 3)]),
         ((64, 64, 64), [(0, 0, 0), (32, 32, 32), (20, 31, 31), (31, 12, 40)])]

for patch, points in CASES:
    m = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125)
    for p in points:
        print(patch, p, repr(m[p].item()))
m = compute_importance_map((64, 64, 64), mode="gaussian", sigma_scale=0.125)
print("floored share, 64^3:", (m <= 1.0001e-3).float().mean().item())
