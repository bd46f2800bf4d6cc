"""A ViT in PyTorch (fp32, CUDA) of a Vision Mamba's size, for the training-speed comparison of
docs/VISION.md (reference only, on the GPU machine; kernels/tools/vision-bench.sh runs it).

CIFAR-like images (32 x 32 x 3, 10 classes), patches of 4 (64 patches and a class token):
a p x p convolution of stride p as the patch embedding, a class token, a learned position
embedding, --depth pre-norm blocks (LayerNorm, attention through F.scaled_dot_product_attention
with d_model / 64 heads, an MLP of 4 x d_model with GELU), a final LayerNorm and the head on the
class token. A training step is what `mamba vision train` does: a batch of random uint8 images
drawn on the host, scaled to [0, 1] and copied up, forward, cross-entropy, backward, gradient
clipping at --grad-clip, AdamW (lr 2e-3, weight decay 0.05). TF32 is off (the engine computes
in full f32) unless --tf32. Prints the parameter count, the median images/s over --steps timed
steps after --warmup steps (torch.cuda.synchronize around each step) and the peak memory.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, d, depth, image=32, patch=4, channels=3, classes=10):
        super().__init__()
        heads = max(1, d // 64)
        assert d % heads == 0, f"d_model {d} is not a multiple of its {heads} heads"
        self.patch_embed = nn.Conv2d(channels, d, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)
        self.heads = heads

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, M, d)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def set_tf32(on):
    mode = "tf32" if on else "ieee"
    if hasattr(torch.backends, "fp32_precision"):  # the API of PyTorch 2.9 and later
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40, help="timed steps, after --warmup")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--images", type=int, default=10000, help="random images the batches are drawn from")
    ap.add_argument("--grad-clip", type=float, default=1.0, help="0: no clipping")
    ap.add_argument("--tf32", action="store_true", help="let matmuls and the convolution use TF32")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()

    set_tf32(args.tf32)
    torch.manual_seed(args.seed)
    dev = torch.device("cuda")
    model = ViT(args.d_model, args.depth).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    data = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.images,))

    def step():
        rows = torch.randint(0, args.images, (args.batch,))
        x = (data[rows].float() / 255.0).to(dev)
        y = labels[rows].to(dev)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    rates = []
    for _ in range(args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        rates.append(args.batch / (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(
        f"vit d_model {args.d_model} depth {args.depth} heads {model.heads} batch {args.batch}: "
        f"{params:,} parameters, {statistics.median(rates):,.0f} images/s (median of {args.steps} steps "
        f"after {args.warmup}), peak memory {peak:,.1f} MiB, last loss {loss.item():.4f}, "
        f"torch {torch.__version__}, tf32 {'on' if args.tf32 else 'off'}, {torch.cuda.get_device_name()}"
    )


if __name__ == "__main__":
    main()
