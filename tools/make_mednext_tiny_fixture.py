#!/usr/bin/env python3
"""Write a tiny MedNeXt reference (weights, input, output) that em-models' tests load and
run, so the burn port is checked against MONAI numerically and both checkpoint namings
are exercised. The files are committed under crates/em-models/tests/fixtures/tiny/;
rerun this script to regenerate them (CPU only, a few seconds):

    pip install torch monai safetensors numpy
    python3 tools/make_mednext_tiny_fixture.py [crates/em-models/tests/fixtures/tiny]

Files written:
  tiny_monai.safetensors  the state_dict in MONAI naming (stem, enc_stages.i.j,
                          down_blocks.i, bottleneck.j, up_blocks.k, dec_stages.k.j, out_0)
  tiny_original.pth       the same tensors in MIC-DKFZ naming (enc_block_i.j, down_i,
                          bottleneck.j, up_{3-k}, dec_block_{3-k}.j, out_0, out_{4-k})
                          plus dummy_tensor = zeros(1); torch.save of a flat dict
  input.npy               float32 (1, 1, 16, 32, 48), torch.randn after manual_seed(1)
  output.npy              float32 (1, 2, 16, 32, 48), model(input) in eval mode
  tiny.json               "config": our MedNeXtConfig (deserialises as is; that struct
                          denies unknown fields, so the metadata sits beside it), plus the
                          MONAI constructor arguments, parameter count, library versions

Every GroupNorm weight/bias is perturbed away from (1, 0) so a loader that leaves norms
at their initial values gives a visibly different output (the script checks that too).
"""
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
import monai
from monai.networks.nets import MedNeXt
from safetensors.torch import load_file, save_file

MONAI_KWARGS = dict(
    spatial_dims=3,
    init_filters=4,
    in_channels=1,
    out_channels=2,
    encoder_expansion_ratio=2,
    decoder_expansion_ratio=2,
    bottleneck_expansion_ratio=2,
    kernel_size=3,
    deep_supervision=False,
    use_residual_connection=True,
    blocks_down=(1, 2, 1, 1),
    blocks_bottleneck=1,
    blocks_up=(1, 1, 2, 1),  # deepest first: blocks_up[0] is decoder level 3
    norm_type="group",
    global_resp_norm=False,
)
# Each side must be a multiple of 16 (four stride-2 levels). 16^3 does not run: the
# bottleneck would be 1^3 and torch's GroupNorm refuses one value per group. Distinct
# sides (bottleneck 1x2x3, six values per channel) also catch axis mix-ups in a port.
INPUT_SHAPE = (1, 1, 16, 32, 48)
NORM_SEED = 1234
NORM_STD = 0.2
LEVELS = 4  # MONAI up_blocks.k / dec_stages.k sit at decoder level 3-k


def our_config():
    """MONAI_KWARGS in em-models' MedNeXtConfig field names. blocks/ratios are 9-vectors:
    encoder level 0..3, bottleneck, decoder level 3..0 (= MONAI's blocks_up order)."""
    k = MONAI_KWARGS
    blocks = list(k["blocks_down"]) + [k["blocks_bottleneck"]] + list(k["blocks_up"])
    ratios = (
        [k["encoder_expansion_ratio"]] * 4
        + [k["bottleneck_expansion_ratio"]]
        + [k["decoder_expansion_ratio"]] * 4
    )
    return {
        "in_channels": k["in_channels"],
        "out_channels": k["out_channels"],
        "width": k["init_filters"],
        "kernel_size": k["kernel_size"],
        "ratios": ratios,
        "blocks": blocks,
        "deep_supervision": k["deep_supervision"],
        "variant": "monai",
        "grn": k["global_resp_norm"],
    }


def build():
    return MedNeXt(**MONAI_KWARGS).eval()


def monai_to_original(key):
    m = re.fullmatch(r"enc_stages\.(\d+)\.(\d+)\.(.+)", key)
    if m:
        return f"enc_block_{m[1]}.{m[2]}.{m[3]}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.(.+)", key)
    if m:
        return f"down_{m[1]}.{m[2]}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.(.+)", key)
    if m:
        return f"up_{LEVELS - 1 - int(m[1])}.{m[2]}"
    m = re.fullmatch(r"dec_stages\.(\d+)\.(\d+)\.(.+)", key)
    if m:
        return f"dec_block_{LEVELS - 1 - int(m[1])}.{m[2]}.{m[3]}"
    m = re.fullmatch(r"out_blocks\.(\d+)\.(.+)", key)
    if m:
        return f"out_{LEVELS - int(m[1])}.{m[2]}"
    if re.fullmatch(r"(stem|bottleneck\.\d+|out_0)\..+", key):
        return key
    raise KeyError(f"no original name for MONAI key {key!r}")


def original_to_monai(key):
    """Written independently of monai_to_original so the round trip checks both."""
    m = re.fullmatch(r"enc_block_(\d+)\.(\d+)\.(.+)", key)
    if m:
        return f"enc_stages.{m[1]}.{m[2]}.{m[3]}"
    m = re.fullmatch(r"down_(\d+)\.(.+)", key)
    if m:
        return f"down_blocks.{m[1]}.{m[2]}"
    m = re.fullmatch(r"up_(\d+)\.(.+)", key)
    if m:
        return f"up_blocks.{LEVELS - 1 - int(m[1])}.{m[2]}"
    m = re.fullmatch(r"dec_block_(\d+)\.(\d+)\.(.+)", key)
    if m:
        return f"dec_stages.{LEVELS - 1 - int(m[1])}.{m[2]}.{m[3]}"
    m = re.fullmatch(r"out_([1-9])\.(.+)", key)
    if m:
        return f"out_blocks.{LEVELS - int(m[1])}.{m[2]}"
    if re.fullmatch(r"(stem|bottleneck\.\d+|out_0)\..+", key):
        return key
    raise KeyError(f"no MONAI name for original key {key!r}")


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "crates/em-models/tests/fixtures/tiny")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # small CPU footprint, and a fixed reduction order

    torch.manual_seed(0)
    model = build()
    gen = torch.Generator().manual_seed(NORM_SEED)
    n_norms = 0
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.GroupNorm):
                mod.weight.copy_(1.0 + NORM_STD * torch.randn(mod.weight.shape, generator=gen))
                mod.bias.copy_(NORM_STD * torch.randn(mod.bias.shape, generator=gen))
                n_norms += 1
    model.eval()

    torch.manual_seed(1)
    x = torch.randn(INPUT_SHAPE, dtype=torch.float32)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, MONAI_KWARGS["out_channels"]) + INPUT_SHAPE[2:], y.shape

    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    n_params = sum(v.numel() for v in sd.values())
    save_file(sd, str(out_dir / "tiny_monai.safetensors"))

    orig = {monai_to_original(k): v for k, v in sd.items()}
    assert len(orig) == len(sd), "renaming collided"
    orig["dummy_tensor"] = torch.zeros(1)
    torch.save(orig, out_dir / "tiny_original.pth")

    np.save(out_dir / "input.npy", np.ascontiguousarray(x.numpy(), dtype=np.float32))
    np.save(out_dir / "output.npy", np.ascontiguousarray(y.numpy(), dtype=np.float32))

    # --- self-checks -------------------------------------------------------------------
    # 1. .pth: rename back, strict load into a fresh model, identical output.
    loaded = torch.load(out_dir / "tiny_original.pth", map_location="cpu", weights_only=True)
    assert isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values())
    assert torch.equal(loaded.pop("dummy_tensor"), torch.zeros(1))
    back = {original_to_monai(k): v for k, v in loaded.items()}
    fresh = build()
    fresh.load_state_dict(back, strict=True)
    fresh.eval()
    with torch.no_grad():
        y_pth = fresh(x)
    assert torch.equal(y_pth, y), (y_pth - y).abs().max()

    # 2. .safetensors: strict load, identical output.
    fresh2 = build()
    fresh2.load_state_dict(load_file(str(out_dir / "tiny_monai.safetensors")), strict=True)
    fresh2.eval()
    with torch.no_grad():
        assert torch.equal(fresh2(x), y)

    # 3. .npy round trip.
    assert np.array_equal(np.load(out_dir / "output.npy"), y.numpy())
    assert np.array_equal(np.load(out_dir / "input.npy"), x.numpy())

    # 4. The norm perturbation matters: resetting norms to (1, 0) changes the output.
    with torch.no_grad():
        for mod in fresh.modules():
            if isinstance(mod, torch.nn.GroupNorm):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
        norm_effect = (fresh(x) - y).abs().max().item()
    max_abs = y.abs().max().item()
    assert norm_effect > 1e-2 * max(max_abs, 1.0), (norm_effect, max_abs)

    meta = {
        "config": our_config(),
        "monai_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in MONAI_KWARGS.items()},
        "parameters": n_params,
        "tensors": len(sd),
        "group_norms_perturbed": n_norms,
        "norm_perturbation": {"seed": NORM_SEED, "std": NORM_STD},
        "model_seed": 0,
        "input": {"file": "input.npy", "shape": list(x.shape), "seed": 1},
        "output": {"file": "output.npy", "shape": list(y.shape), "max_abs": max_abs},
        "output_change_if_norms_reset": norm_effect,
        "files": {
            "monai": "tiny_monai.safetensors",
            "original": "tiny_original.pth",
        },
        "torch": torch.__version__,
        "monai": monai.__version__,
    }
    (out_dir / "tiny.json").write_text(json.dumps(meta, indent=2) + "\n")

    total = 0
    for f in sorted(out_dir.iterdir()):
        total += f.stat().st_size
        print(f"{f.stat().st_size:>9}  {f}")
    print(f"{total:>9}  total")
    print(f"parameters={n_params} tensors={len(sd)} max|output|={max_abs:.6g} "
          f"norm_reset_change={norm_effect:.6g}")


if __name__ == "__main__":
    main()
