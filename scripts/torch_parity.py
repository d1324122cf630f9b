#!/usr/bin/python3
"""Write the PyTorch parity fixtures of the Go U-Net (model/testdata/*.bin).

The Go package model implements diffusers' UNet2DModel (DownBlock2D/UpBlock2D, with
AttnDownBlock2D/AttnUpBlock2D where a block asks for attention and self-attention in
the middle block). diffusers is not installed here, so this script rebuilds the same
modules in plain torch, module for module, with diffusers' state-dict key names (a
checkpoint of either loads into the other), from a diffusers config.json, as
UNet2DModel.__init__ reads it. The forward passes follow diffusers 0.2x:
UNet2DModel.forward, ResnetBlock2D (time_embedding_norm="default",
output_scale_factor=1), Attention with AttnProcessor (group_norm, residual_connection,
rescale_output_factor=1, heads = channels // attention_head_dim, one head when it is
null), Downsample2D (padding 1, or F.pad (0, 1, 0, 1) and padding 0) and Upsample2D
with use_conv, and get_timestep_embedding(flip_sin_to_cos, downscale_freq_shift).

For each fixture (FIXTURES; model/testdata/<name>.config.json, written by the Go
exporter) the script draws weights with torch's default initialisation (GroupNorm
affine parameters perturbed away from 1 and 0 so that their gradients matter), rounds
them to float32, runs the model in float64 on a float32 input, a target and timesteps,
and records the output, the MSE loss against the target and every parameter gradient
in float64 into model/testdata/<name>.bin.

Run: /usr/bin/python3 scripts/torch_parity.py [NAME ...]   (Debian's python3-torch)

File format (little endian): b"DDPMFIX1", uint32 tensor count, then per tensor
uint16 name length, the UTF-8 name, uint8 element size (4 = float32, 8 = float64),
uint8 rank, rank x uint32 dims, the elements in row-major order. Names: "input",
"timesteps", "target", "output", "loss", "param/<key>", "grad/<key>".
"""

import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# The fixtures: each is written from a diffusers UNet2DModel config.json in model/testdata (written by the Go
# exporter, diffusers.EncodeUNet: go test ./model -run TorchParityFromConfig -update-configs), so that the PyTorch
# model is built from the exported config alone. unet_parity is the tiny model of model/parity_test.go
# (parityConfig); the others change one option each against a smaller base (model/config_parity_test.go).
FIXTURES = ("unet_parity", "opt_freq_shift", "opt_sin_first", "opt_downsample_padding0", "opt_attention_down_up")
BATCH = 2
TIMESTEPS = (3.0, 917.0)
SEED = 1234


class Config:
    """The UNet2DModel arguments the model below implements, read from a config.json; anything else fails loudly
    (the Go reader refuses the same values, see package diffusers)."""

    FIXED = {"_class_name": "UNet2DModel", "time_embedding_type": "positional", "center_input_sample": False,
             "mid_block_scale_factor": 1, "downsample_type": "conv", "upsample_type": "conv", "act_fn": "silu",
             "resnet_time_scale_shift": "default", "class_embed_type": None, "num_class_embeds": None,
             "attn_norm_num_groups": None}
    # UNet2DModel.__init__'s defaults, for keys a config.json leaves out (as from_config does).
    DEFAULTS = {"in_channels": 3, "out_channels": 3, "freq_shift": 0, "flip_sin_to_cos": True,
                "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                "block_out_channels": (224, 448, 672, 896), "layers_per_block": 2, "downsample_padding": 1,
                "dropout": 0.0, "attention_head_dim": 8, "norm_num_groups": 32, "norm_eps": 1e-5,
                "add_attention": True}

    def __init__(self, d):
        d = {**self.DEFAULTS, **d}
        for k, v in self.FIXED.items():
            if d.get(k, v) != v:
                raise SystemExit(f"config.json: {k} = {d[k]!r} is not implemented here (want {v!r})")
        self.in_channels = d["in_channels"]
        assert d["out_channels"] == self.in_channels
        self.image_size = d["sample_size"]
        self.block_channels = tuple(d["block_out_channels"])
        self.layers_per_block = d["layers_per_block"]
        self.down_attn = [t == "AttnDownBlock2D" for t in d["down_block_types"]]
        self.up_attn = [t == "AttnUpBlock2D" for t in d["up_block_types"]]
        for t in list(d["down_block_types"]) + list(d["up_block_types"]):
            assert t in ("DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"), t
        self.mid_attention = d["add_attention"]
        self.attention_head_dim = d["attention_head_dim"]  # None: one head per block
        self.norm_groups = d["norm_num_groups"]
        self.norm_eps = d["norm_eps"]
        self.flip_sin_to_cos = d["flip_sin_to_cos"]
        self.freq_shift = d["freq_shift"]
        self.downsample_padding = d["downsample_padding"]
        assert self.downsample_padding in (0, 1)
        self.dropout = d["dropout"]  # the fixtures use 0

    def head_dim(self, channels):
        """UNet2DModel passes attention_head_dim, or the block's width when it is None."""
        return self.attention_head_dim if self.attention_head_dim is not None else channels


def timestep_embedding(t, dim, flip_sin_to_cos, shift):
    """diffusers' get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift=shift), max_period 10000,
    scale 1, in t's dtype."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=t.dtype) / (half - shift)
    arg = t[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, C, cin, cout, temb):
        super().__init__()
        self.norm1 = nn.GroupNorm(C.norm_groups, cin, eps=C.norm_eps, affine=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(C.norm_groups, cout, eps=C.norm_eps, affine=True)
        self.dropout = nn.Dropout(C.dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1, 1, 0) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    def __init__(self, C, c):
        super().__init__()
        self.heads = c // C.head_dim(c)
        self.group_norm = nn.GroupNorm(C.norm_groups, c, eps=C.norm_eps, affine=True)
        self.to_q = nn.Linear(c, c)
        self.to_k = nn.Linear(c, c)
        self.to_v = nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c), nn.Dropout(0.0)])

    def forward(self, x):
        b, c, h, w = x.shape
        L, d = h * w, c // self.heads
        z = self.group_norm(x.view(b, c, L)).transpose(1, 2)  # [b, L, c]

        def split(y):  # [b, L, c] -> [b, heads, L, d]
            return y.view(b, L, self.heads, d).transpose(1, 2)

        q, k, v = split(self.to_q(z)), split(self.to_k(z)), split(self.to_v(z))
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        o = (p @ v).transpose(1, 2).reshape(b, L, c)
        o = self.to_out[1](self.to_out[0](o))
        return o.transpose(1, 2).reshape(b, c, h, w) + x


class Downsample2D(nn.Module):
    """Downsample2D(use_conv=True, padding=p): with p = 0 diffusers pads (0, 1, 0, 1) first."""

    def __init__(self, c, padding):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=padding)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """DownBlock2D, or AttnDownBlock2D when attn."""

    def __init__(self, C, cin, cout, temb, attn, down):
        super().__init__()
        n = C.layers_per_block
        if attn:
            self.attentions = nn.ModuleList([Attention(C, cout) for _ in range(n)])
        self.resnets = nn.ModuleList([ResnetBlock2D(C, cin if i == 0 else cout, cout, temb) for i in range(n)])
        self.attn = attn
        if down:
            self.downsamplers = nn.ModuleList([Downsample2D(cout, C.downsample_padding)])
        self.down = down

    def forward(self, h, temb):
        out = ()
        for i, r in enumerate(self.resnets):
            h = r(h, temb)
            if self.attn:
                h = self.attentions[i](h)
            out += (h,)
        if self.down:
            h = self.downsamplers[0](h)
            out += (h,)
        return h, out


class UpBlock(nn.Module):
    """UpBlock2D, or AttnUpBlock2D when attn."""

    def __init__(self, C, cin, cprev, cout, temb, attn, up):
        super().__init__()
        n = C.layers_per_block + 1
        if attn:
            self.attentions = nn.ModuleList([Attention(C, cout) for _ in range(n)])
        res = []
        for i in range(n):
            skip = cin if i == n - 1 else cout
            rin = cprev if i == 0 else cout
            res.append(ResnetBlock2D(C, rin + skip, cout, temb))
        self.resnets = nn.ModuleList(res)
        self.attn = attn
        if up:
            self.upsamplers = nn.ModuleList([Upsample2D(cout)])
        self.up = up

    def forward(self, h, skips, temb):
        for i, r in enumerate(self.resnets):
            h = torch.cat([h, skips[-1]], dim=1)
            skips = skips[:-1]
            h = r(h, temb)
            if self.attn:
                h = self.attentions[i](h)
        if self.up:
            h = self.upsamplers[0](h)
        return h


class MidBlock(nn.Module):
    def __init__(self, C, c, temb):
        super().__init__()
        self.mid_attention = C.mid_attention
        if self.mid_attention:
            self.attentions = nn.ModuleList([Attention(C, c)])
        self.resnets = nn.ModuleList([ResnetBlock2D(C, c, c, temb), ResnetBlock2D(C, c, c, temb)])

    def forward(self, h, temb):
        h = self.resnets[0](h, temb)
        if self.mid_attention:
            h = self.attentions[0](h)
        return self.resnets[1](h, temb)


class UNet2DModel(nn.Module):
    """UNet2DModel.__init__ for the block types above: down block i at level i, up block i at level L-1-i."""

    def __init__(self, C):
        super().__init__()
        self.C = C
        ch = C.block_channels
        L = len(ch)
        temb = 4 * ch[0]
        self.conv_in = nn.Conv2d(C.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.down_blocks = nn.ModuleList()
        cout = ch[0]
        for i in range(L):
            cin, cout = cout, ch[i]
            self.down_blocks.append(DownBlock(C, cin, cout, temb, C.down_attn[i], i < L - 1))
        self.mid_block = MidBlock(C, ch[-1], temb)
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(ch))
        cout = rev[0]
        for i in range(L):
            cprev, cout, cin = cout, rev[i], rev[min(i + 1, L - 1)]
            self.up_blocks.append(UpBlock(C, cin, cprev, cout, temb, C.up_attn[i], i < L - 1))
        self.conv_norm_out = nn.GroupNorm(C.norm_groups, ch[0], eps=C.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[0], C.in_channels, 3, padding=1)

    def forward(self, x, t):
        C = self.C
        temb = self.time_embedding(timestep_embedding(t, C.block_channels[0], C.flip_sin_to_cos, C.freq_shift))
        h = self.conv_in(x)
        skips = (h,)
        for b in self.down_blocks:
            h, s = b(h, temb)
            skips += s
        h = self.mid_block(h, temb)
        for b in self.up_blocks:
            n = len(b.resnets)
            h = b(h, skips[-n:], temb)
            skips = skips[:-n]
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))


def write(path, tensors):
    with open(path, "wb") as f:
        f.write(b"DDPMFIX1")
        f.write(struct.pack("<I", len(tensors)))
        for name, t in tensors:
            t = t.detach().contiguous()
            fmt = {torch.float32: ("<f", 4), torch.float64: ("<d", 8)}[t.dtype]
            nb = name.encode()
            f.write(struct.pack("<H", len(nb)))
            f.write(nb)
            f.write(struct.pack("<BB", fmt[1], t.dim()))
            for d in t.shape:
                f.write(struct.pack("<I", d))
            f.write(t.numpy().astype(fmt[0]).tobytes())


def fixture(testdata, name):
    """Builds the model of testdata/<name>.config.json and writes testdata/<name>.bin."""
    with open(os.path.join(testdata, name + ".config.json")) as f:
        C = Config(json.load(f))
    torch.manual_seed(SEED)
    model = UNet2DModel(C)  # float32, torch's default init
    with torch.no_grad():
        for _, m in model.named_modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.add_(0.2 * torch.randn_like(m.weight))
                m.bias.add_(0.2 * torch.randn_like(m.bias))
    params32 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = model.double()

    x = torch.randn(BATCH, C.in_channels, C.image_size, C.image_size)  # float32 values
    target = torch.randn(BATCH, C.in_channels, C.image_size, C.image_size)
    t = torch.tensor(TIMESTEPS, dtype=torch.float32)

    out = model(x.double(), t.double())
    loss = F.mse_loss(out, target.double())
    loss.backward()

    tensors = [("input", x), ("timesteps", t), ("target", target), ("output", out),
               ("loss", loss.reshape(1))]
    for k, p in model.named_parameters():
        tensors.append(("param/" + k, params32[k]))
    for k, p in model.named_parameters():
        tensors.append(("grad/" + k, p.grad))

    path = os.path.join(testdata, name + ".bin")
    write(path, tensors)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {os.path.normpath(path)}: {n} parameters, loss {loss.item():.12g}", file=sys.stderr)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    testdata = os.path.join(here, "..", "model", "testdata")
    for name in sys.argv[1:] or FIXTURES:
        fixture(testdata, name)


if __name__ == "__main__":
    main()
