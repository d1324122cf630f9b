#!/usr/bin/python3
"""Write the PyTorch parity fixture of the Go U-Net (model/testdata/unet_parity.bin).

The Go package model implements diffusers' UNet2DModel (DownBlock2D/UpBlock2D, with
AttnDownBlock2D/AttnUpBlock2D at chosen resolutions and self-attention in the middle
block). diffusers is not installed here, so this script rebuilds the same modules in
plain torch, module for module, with diffusers' state-dict key names (a checkpoint of
either loads into the other). The forward passes follow diffusers 0.2x:
UNet2DModel.forward, ResnetBlock2D (time_embedding_norm="default",
output_scale_factor=1), Attention with AttnProcessor (group_norm, residual_connection,
rescale_output_factor=1), Downsample2D/Upsample2D with use_conv, and
get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0).

At a tiny config (below; model/parity_test.go repeats it) the script draws weights
with torch's default initialisation (GroupNorm affine parameters perturbed away from
1 and 0 so that their gradients matter), rounds them to float32, runs the model in
float64 on a float32 input, a target and timesteps, and records the output, the MSE
loss against the target and every parameter gradient in float64.

Run: /usr/bin/python3 scripts/torch_parity.py   (Debian's python3-torch)

File format (little endian): b"DDPMFIX1", uint32 tensor count, then per tensor
uint16 name length, the UTF-8 name, uint8 element size (4 = float32, 8 = float64),
uint8 rank, rank x uint32 dims, the elements in row-major order. Names: "input",
"timesteps", "target", "output", "loss", "param/<key>", "grad/<key>".
"""

import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# The tiny config of the fixture (model/parity_test.go: parityConfig).
IN_CHANNELS = 3
IMAGE_SIZE = 8
BLOCK_CHANNELS = (4, 8, 12)
LAYERS_PER_BLOCK = 2
ATTENTION_RESOLUTIONS = (4,)
MID_ATTENTION = True
ATTENTION_HEAD_DIM = 4
NORM_GROUPS = 2
NORM_EPS = 1e-5
BATCH = 2
TIMESTEPS = (3.0, 917.0)
SEED = 1234


def timestep_embedding(t, dim):
    """diffusers' get_timestep_embedding with flip_sin_to_cos=True, shift 0, max_period 10000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=t.dtype) / half)
    arg = t[:, None] * freqs[None, :]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.norm1 = nn.GroupNorm(NORM_GROUPS, cin, eps=NORM_EPS, affine=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, cout, eps=NORM_EPS, affine=True)
        self.dropout = nn.Dropout(0.0)
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
    def __init__(self, c):
        super().__init__()
        self.heads = c // ATTENTION_HEAD_DIM
        self.group_norm = nn.GroupNorm(NORM_GROUPS, c, eps=NORM_EPS, affine=True)
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
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """DownBlock2D, or AttnDownBlock2D when attn."""

    def __init__(self, cin, cout, temb, attn, down):
        super().__init__()
        if attn:
            self.attentions = nn.ModuleList([Attention(cout) for _ in range(LAYERS_PER_BLOCK)])
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if i == 0 else cout, cout, temb) for i in range(LAYERS_PER_BLOCK)])
        self.attn = attn
        if down:
            self.downsamplers = nn.ModuleList([Downsample2D(cout)])
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

    def __init__(self, cin, cprev, cout, temb, attn, up):
        super().__init__()
        n = LAYERS_PER_BLOCK + 1
        if attn:
            self.attentions = nn.ModuleList([Attention(cout) for _ in range(n)])
        res = []
        for i in range(n):
            skip = cin if i == n - 1 else cout
            rin = cprev if i == 0 else cout
            res.append(ResnetBlock2D(rin + skip, cout, temb))
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
    def __init__(self, c, temb):
        super().__init__()
        if MID_ATTENTION:
            self.attentions = nn.ModuleList([Attention(c)])
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, temb), ResnetBlock2D(c, c, temb)])

    def forward(self, h, temb):
        h = self.resnets[0](h, temb)
        if MID_ATTENTION:
            h = self.attentions[0](h)
        return self.resnets[1](h, temb)


class UNet2DModel(nn.Module):
    def __init__(self):
        super().__init__()
        ch = BLOCK_CHANNELS
        L = len(ch)
        temb = 4 * ch[0]
        self.conv_in = nn.Conv2d(IN_CHANNELS, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.down_blocks = nn.ModuleList()
        cout = ch[0]
        for i in range(L):
            cin, cout = cout, ch[i]
            attn = (IMAGE_SIZE >> i) in ATTENTION_RESOLUTIONS
            self.down_blocks.append(DownBlock(cin, cout, temb, attn, i < L - 1))
        self.mid_block = MidBlock(ch[-1], temb)
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(ch))
        cout = rev[0]
        for i in range(L):
            cprev, cout, cin = cout, rev[i], rev[min(i + 1, L - 1)]
            attn = (IMAGE_SIZE >> (L - 1 - i)) in ATTENTION_RESOLUTIONS
            self.up_blocks.append(UpBlock(cin, cprev, cout, temb, attn, i < L - 1))
        self.conv_norm_out = nn.GroupNorm(NORM_GROUPS, ch[0], eps=NORM_EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[0], IN_CHANNELS, 3, padding=1)

    def forward(self, x, t):
        temb = self.time_embedding(timestep_embedding(t, BLOCK_CHANNELS[0]))
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


def main():
    torch.manual_seed(SEED)
    model = UNet2DModel()  # float32, torch's default init
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.add_(0.2 * torch.randn_like(m.weight))
                m.bias.add_(0.2 * torch.randn_like(m.bias))
    params32 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = model.double()

    x = torch.randn(BATCH, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)  # float32 values
    target = torch.randn(BATCH, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
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

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "model", "testdata", "unet_parity.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write(path, tensors)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {os.path.normpath(path)}: {n} parameters, loss {loss.item():.12g}", file=sys.stderr)


if __name__ == "__main__":
    main()
