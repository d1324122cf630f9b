#!/usr/bin/python3
"""Load a trainer checkpoint into a PyTorch UNet2DModel, strictly, by name and shape.

    /usr/bin/python3 scripts/torch_load.py runs/celeba32/checkpoints/latest.safetensors
    /usr/bin/python3 scripts/torch_load.py runs/fashion32/unet_ema.safetensors runs/fashion32/config.toml

The architecture is read from the config stored in the checkpoint's metadata, or from
the run's config.toml given as the second argument. The file
is parsed by hand (8-byte header length, JSON header, raw little-endian data), so only
torch is needed. Tensors under the trainer's prefixes (ema/, adamw.exp_avg/,
adamw.exp_avg_sq/) are set aside; the plain names must match the model's state dict
exactly (no missing, no unexpected keys, equal shapes). The model is
scripts/torch_parity.py's UNet2DModel, which uses diffusers' module and key names; when
the diffusers package is importable, the weights are also loaded into
diffusers.UNet2DModel built with the same configuration. Exit status 0 when every load
succeeds.
"""

import json
import os
import struct
import sys
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch_parity as tp  # noqa: E402

PREFIXES = ("ema/", "adamw.exp_avg/", "adamw.exp_avg_sq/")
DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[lo:hi]), dtype=DTYPES[info["dtype"]])
        tensors[name] = t.reshape(info["shape"])
    return tensors, meta


def configure(cfg):
    m, d = cfg["model"], cfg["data"]
    tp.IN_CHANNELS = d["channels"]
    tp.IMAGE_SIZE = d["image_size"]
    tp.BLOCK_CHANNELS = tuple(m["block_channels"])
    tp.LAYERS_PER_BLOCK = m["layers_per_block"]
    tp.ATTENTION_RESOLUTIONS = tuple(m.get("attention_resolutions", []))
    tp.MID_ATTENTION = m["mid_attention"]
    tp.ATTENTION_HEAD_DIM = m["attention_head_dim"]
    tp.NORM_GROUPS = m["norm_groups"]
    tp.NORM_EPS = m["norm_eps"]


def diffusers_model(cfg):
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    m, d = cfg["model"], cfg["data"]
    res = [d["image_size"] >> i for i in range(len(m["block_channels"]))]
    attn = set(m.get("attention_resolutions", []))
    down = ["AttnDownBlock2D" if r in attn else "DownBlock2D" for r in res]
    up = ["AttnUpBlock2D" if r in attn else "UpBlock2D" for r in reversed(res)]
    return UNet2DModel(
        sample_size=d["image_size"], in_channels=d["channels"], out_channels=d["channels"],
        block_out_channels=tuple(m["block_channels"]), layers_per_block=m["layers_per_block"],
        down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=m["norm_groups"],
        norm_eps=m["norm_eps"], attention_head_dim=m["attention_head_dim"],
        flip_sin_to_cos=True, freq_shift=0, add_attention=m["mid_attention"])


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    tensors, meta = read_safetensors(sys.argv[1])
    if len(sys.argv) == 3:
        with open(sys.argv[2], "rb") as f:
            cfg = tomllib.load(f)
    elif "config" in meta:
        cfg = tomllib.loads(meta["config"])
    else:
        print(f"{sys.argv[1]}: no config in the metadata; give the run's config.toml as well", file=sys.stderr)
        return 2
    weights = {k: v.float() for k, v in tensors.items() if not k.startswith(PREFIXES)}
    configure(cfg)
    models = [("torch_parity.UNet2DModel", tp.UNet2DModel())]
    dm = diffusers_model(cfg)
    if dm is not None:
        models.append(("diffusers.UNet2DModel", dm))
    else:
        print("diffusers is not installed: checked against torch_parity's UNet2DModel only", file=sys.stderr)
    for name, model in models:
        model.load_state_dict(weights, strict=True)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: loaded {len(weights)} tensors, {n} parameters, strict")
    return 0


if __name__ == "__main__":
    sys.exit(main())
