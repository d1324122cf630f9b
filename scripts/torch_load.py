#!/usr/bin/python3
"""Load a trainer checkpoint or an exported diffusers folder into a PyTorch UNet2DModel, strictly, by name and shape.

    /usr/bin/python3 scripts/torch_load.py runs/celeba32/checkpoints/latest.safetensors
    /usr/bin/python3 scripts/torch_load.py runs/fashion32/unet_ema.safetensors runs/fashion32/config.toml
    /usr/bin/python3 scripts/torch_load.py runs/fashion32/pipeline

A folder (a DDPMPipeline folder such as RUN/pipeline, or its unet/ folder) is read as diffusers reads it: the
architecture from unet/config.json alone, the weights from unet/diffusion_pytorch_model.safetensors. For a checkpoint
the architecture is read from the config stored in its metadata, or from the run's config.toml given as the second
argument, and turned into the config.json the exporter writes. The safetensors file is parsed by hand (8-byte header
length, JSON header, raw little-endian data), so only torch is needed. Tensors under the trainer's prefixes (ema/,
adamw.exp_avg/, adamw.exp_avg_sq/) are set aside; the plain names must match the model's state dict exactly (no
missing, no unexpected keys, equal shapes). The model is scripts/torch_parity.py's UNet2DModel, built from the
config.json as diffusers' UNet2DModel.__init__ builds it, with diffusers' module and key names; when the diffusers
package is importable, the weights are also loaded into diffusers.UNet2DModel.from_config(config), and a pipeline
folder with DDPMPipeline.from_pretrained. Exit status 0 when every load succeeds.
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


def unet_config(cfg):
    """The UNet2DModel config.json of a trainer config (what the Go exporter, diffusers.EncodeUNet, writes)."""
    m, d = cfg["model"], cfg["data"]
    size, L = d["image_size"], len(m["block_channels"])
    both = set(m.get("attention_resolutions", []))
    down_attn = both | set(m.get("down_attention_resolutions", []))
    up_attn = both | set(m.get("up_attention_resolutions", []))
    return {
        "_class_name": "UNet2DModel", "sample_size": size, "in_channels": d["channels"], "out_channels": d["channels"],
        "block_out_channels": list(m["block_channels"]), "layers_per_block": m["layers_per_block"],
        "down_block_types": ["AttnDownBlock2D" if size >> l in down_attn else "DownBlock2D" for l in range(L)],
        "up_block_types": ["AttnUpBlock2D" if size >> l in up_attn else "UpBlock2D" for l in reversed(range(L))],
        "norm_num_groups": m["norm_groups"], "norm_eps": m["norm_eps"], "attention_head_dim": m["attention_head_dim"] or None,
        "flip_sin_to_cos": m.get("flip_sin_to_cos", True), "freq_shift": m.get("freq_shift", 0),
        "downsample_padding": m.get("downsample_padding", 1), "add_attention": m["mid_attention"],
        "dropout": m.get("dropout", 0.0),
    }


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    pipeline = None
    if os.path.isdir(args[0]):
        unet = args[0]
        if os.path.exists(os.path.join(unet, "model_index.json")):
            pipeline, unet = unet, os.path.join(unet, "unet")
        with open(os.path.join(unet, "config.json")) as f:
            config = json.load(f)
        tensors, meta = read_safetensors(os.path.join(unet, "diffusion_pytorch_model.safetensors"))
    else:
        tensors, meta = read_safetensors(args[0])
        if len(args) == 2:
            with open(args[1], "rb") as f:
                cfg = tomllib.load(f)
        elif "config" in meta:
            cfg = tomllib.loads(meta["config"])
        else:
            print(f"{args[0]}: no config in the metadata; give the run's config.toml as well", file=sys.stderr)
            return 2
        config = unet_config(cfg)
    weights = {k: v.float() for k, v in tensors.items() if not k.startswith(PREFIXES)}
    models = [("torch_parity.UNet2DModel", tp.UNet2DModel(tp.Config(config)))]
    try:
        import diffusers
    except ImportError:
        diffusers = None
        print("diffusers is not installed: checked against torch_parity's UNet2DModel only", file=sys.stderr)
    if diffusers is not None:
        models.append(("diffusers.UNet2DModel", diffusers.UNet2DModel.from_config(
            {k: v for k, v in config.items() if not k.startswith("_")})))
    for name, model in models:
        model.load_state_dict(weights, strict=True)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: loaded {len(weights)} tensors, {n} parameters, strict")
    if diffusers is not None and pipeline is not None:
        pipe = diffusers.DDPMPipeline.from_pretrained(pipeline)
        n = sum(p.numel() for p in pipe.unet.parameters())
        print(f"diffusers.DDPMPipeline.from_pretrained({pipeline!r}): unet of {n} parameters, {type(pipe.scheduler).__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
