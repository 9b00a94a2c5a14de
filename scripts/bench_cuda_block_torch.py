#!/usr/bin/env python3
"""PyTorch eager reference for `dod-bench cuda_block` (tests/bench/bench_cuda_block.c): one training
step (forward, MSE loss, backward) of an SD 2.1 level-1 ResNet block + transformer block on CUDA,
same shapes and precision as the C side.

Run:   python3 scripts/bench_cuda_block_torch.py [--batch 7] [--size 32] [--iters 10] [--blocks 1] [--mixed]
Needs: torch with CUDA (a GPU). f32 mode disables TF32 (as the C side does); --mixed freezes the
matrices in bf16 and runs them under bf16 autocast.
Prints "torch_ms <median ms per step>" and "torch_peak_gib <peak allocated GiB>".
"""
import argparse
import statistics
import sys
import time

C, CTX_LEN, CTX_DIM, TEMB, HEADS = 320, 77, 1024, 1280, 5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=7)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--mixed", action="store_true")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"missing {e.name}", file=sys.stderr)
        return 3
    if not torch.cuda.is_available():
        print("torch sees no CUDA device", file=sys.stderr)
        return 3
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)

    def mat(*shape):  # matrices: frozen bf16 in mixed mode, trainable f32 otherwise
        t = torch.randn(*shape, device=dev, generator=g) * 0.02
        return t.bfloat16() if a.mixed else t.requires_grad_()

    def vec(n, ones=False):
        t = torch.ones(n, device=dev) if ones else torch.randn(n, device=dev, generator=g) * 0.02
        return t.requires_grad_()

    def pair():
        return dict(gn1_g=vec(C, 1), gn1_b=vec(C), conv1_w=mat(C, C, 3, 3), conv1_b=vec(C), temb_w=mat(C, TEMB),
                    temb_b=vec(C), gn2_g=vec(C, 1), gn2_b=vec(C), conv2_w=mat(C, C, 3, 3), conv2_b=vec(C),
                    tgn_g=vec(C, 1), tgn_b=vec(C), proj_in_w=mat(C, C), proj_in_b=vec(C), ln1_g=vec(C, 1),
                    ln1_b=vec(C), q1=mat(C, C), k1=mat(C, C), v1=mat(C, C), o1_w=mat(C, C), o1_b=vec(C),
                    ln2_g=vec(C, 1), ln2_b=vec(C), q2=mat(C, C), k2=mat(C, CTX_DIM), v2=mat(C, CTX_DIM),
                    o2_w=mat(C, C), o2_b=vec(C), ln3_g=vec(C, 1), ln3_b=vec(C), ff1_w=mat(8 * C, C),
                    ff1_b=vec(8 * C), ff2_w=mat(C, 4 * C), ff2_b=vec(C), proj_out_w=mat(C, C), proj_out_b=vec(C))

    def attention(q, k, v):
        n, lq, _ = q.shape
        split = lambda t: t.view(n, t.shape[1], HEADS, C // HEADS).transpose(1, 2)
        o = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return o.transpose(1, 2).reshape(n, lq, C)

    def block(p, x, temb, ctx):
        n, _, h_, w_ = x.shape
        h = F.conv2d(F.silu(F.group_norm(x, 32, p["gn1_g"], p["gn1_b"], 1e-5)), p["conv1_w"], p["conv1_b"], padding=1)
        h = h + F.linear(F.silu(temb), p["temb_w"], p["temb_b"])[:, :, None, None]
        h = F.conv2d(F.silu(F.group_norm(h, 32, p["gn2_g"], p["gn2_b"], 1e-5)), p["conv2_w"], p["conv2_b"], padding=1)
        r = x + h
        s = F.group_norm(r, 32, p["tgn_g"], p["tgn_b"], 1e-6).reshape(n, C, h_ * w_).transpose(1, 2)
        s = F.linear(s, p["proj_in_w"], p["proj_in_b"])
        t = F.layer_norm(s, (C,), p["ln1_g"], p["ln1_b"])
        s = s + F.linear(attention(F.linear(t, p["q1"]), F.linear(t, p["k1"]), F.linear(t, p["v1"])), p["o1_w"], p["o1_b"])
        t = F.layer_norm(s, (C,), p["ln2_g"], p["ln2_b"])
        s = s + F.linear(attention(F.linear(t, p["q2"]), F.linear(ctx, p["k2"]), F.linear(ctx, p["v2"])), p["o2_w"], p["o2_b"])
        hid, gate = F.linear(F.layer_norm(s, (C,), p["ln3_g"], p["ln3_b"]), p["ff1_w"], p["ff1_b"]).chunk(2, -1)
        s = s + F.linear(hid * F.gelu(gate), p["ff2_w"], p["ff2_b"])
        s = F.linear(s, p["proj_out_w"], p["proj_out_b"]).transpose(1, 2).reshape(n, C, h_, w_)
        return s + r

    pairs = [pair() for _ in range(a.blocks)]
    x = torch.randn(a.batch, C, a.size, a.size, device=dev, generator=g).requires_grad_()
    target = torch.randn(a.batch, C, a.size, a.size, device=dev, generator=g)
    temb = torch.randn(a.batch, TEMB, device=dev, generator=g)
    ctx = torch.randn(a.batch, CTX_LEN, CTX_DIM, device=dev, generator=g)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for it in range(a.iters + 1):  # iteration 0 warms up
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.mixed):
            h = x
            for p in pairs:
                h = block(p, h, temb, ctx)
            loss = F.mse_loss(h.float(), target)
        loss.backward()
        torch.cuda.synchronize()
        if it > 0:
            times.append((time.perf_counter() - t0) * 1e3)
    print(f"torch_ms {statistics.median(times):.3f}")
    print(f"torch_peak_gib {torch.cuda.max_memory_allocated() / 2**30:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
