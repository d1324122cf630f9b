#!/usr/bin/python3
"""Time PyTorch training steps of the same U-Net the Go trainer builds.

The model comes from scripts/torch_parity.py (diffusers' UNet2DModel rebuilt in plain
torch with the same state-dict keys), configured like configs/celeba32.toml unless told
otherwise. One step = forward, MSE loss against random ε, backward, AdamW step, as the
Go trainer's step. Data are random (as bin/train -bench), so no data loading is timed.

    /usr/bin/python3 scripts/bench_torch.py --batch 64 --threads 2 --steps 5
    /usr/bin/python3 scripts/bench_torch.py --dtype bf16     # the whole model, its inputs and AdamW in bfloat16

--dtype bf16 casts the whole model (parameters, hence gradients and AdamW's moments) and the inputs to bfloat16,
as `model.to(torch.bfloat16)` does: PyTorch 1.13's torch.autocast("cpu", dtype=torch.bfloat16) fails on GroupNorm,
so this is its fastest bf16 training, and a less precise one than AMP (no FP32 master weights or accumulation of
gradients across steps, the timestep embedding and softmax in bf16).

The last line has the same form as `bin/train -bench`:
    bench: <img/s> img/s, <GFLOP/s> GFLOP/s, <ms> ms/step, <MiB> MiB peak
GFLOP/s counts a training step as 3× the forward FLOPs (4.10 GFLOP per 32×32 image for
celeba32), as the Go side does.
"""

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch_parity as tp  # noqa: E402


def conv_flops(model, x, t):
    """Forward FLOPs of convolutions, linears and attention matmuls, counted with hooks."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += 2 * out.numel() * m.in_channels * k

    def lin_hook(m, inp, out):
        nonlocal total
        total += 2 * out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        model(x, t)
    for h in hooks:
        h.remove()
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--channels", default="64,128,256")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    torch.set_num_threads(args.threads)
    channels = [int(c) for c in args.channels.split(",")]
    cfg = tp.Config({"in_channels": args.in_channels, "out_channels": args.in_channels, "sample_size": args.size,
                     "block_out_channels": channels, "layers_per_block": args.layers,
                     "down_block_types": ["DownBlock2D"] * len(channels), "up_block_types": ["UpBlock2D"] * len(channels),
                     "add_attention": True, "attention_head_dim": 8, "norm_num_groups": args.groups})
    torch.manual_seed(0)
    model = tp.UNet2DModel(cfg).to(dtype)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    B = args.batch
    x = torch.randn(B, args.in_channels, args.size, args.size).to(dtype)
    eps = torch.randn_like(x)
    t = torch.randint(0, 1000, (B,)).to(dtype)
    fwd = conv_flops(model, x, t)

    def step():
        opt.zero_grad(set_to_none=True)
        # The loss in float32: PyTorch 1.13 has no bfloat16 mse_loss on the CPU (a [B, 3, 32, 32] cast, negligible).
        loss = torch.nn.functional.mse_loss(model(x, t).float(), eps.float())
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = (time.perf_counter() - t0) / args.steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__}, {args.dtype}, {nparams} params, batch {B}, {torch.get_num_threads()} threads, "
          f"{fwd / B / 1e9:.2f} GFLOP forward per image", file=sys.stderr)
    print(f"bench: {B / dt:.2f} img/s, {3 * fwd / dt / 1e9:.1f} GFLOP/s, {dt * 1e3:.0f} ms/step, {peak:.0f} MiB peak")


if __name__ == "__main__":
    main()
