"""One training step of the reference byte LM (state-spaces/mamba's MambaLMHeadModel, run from
its source in the git-ignored ref/, see kernels/tools/ref-setup.sh), timed at the size that
kernels/tools/lm-bench.sh trains ours: the step mamba train takes (forward, cross-entropy,
backward, clip 1.0, AdamW), on random bytes, fp32 unless --bf16. Prints the median ms/step,
tokens/s, the peak of torch's allocator over the timed steps, the parameter count and the
mixer's settings. Usage there, from the repo root: python3 kernels/tools/lm_ref.py [flags]
"""
import argparse
import math
import statistics
import sys
import time
import types
from pathlib import Path

REF = Path(__file__).resolve().parents[2] / "ref"

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--layer", choices=["Mamba1", "Mamba2"], default="Mamba2")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--seq-len", type=int, default=2048)
p.add_argument("--d-model", type=int, default=768)
p.add_argument("--n-layer", type=int, default=24)
p.add_argument("--warmup", type=int, default=3, help="untimed steps (Triton autotuning happens here)")
p.add_argument("--steps", type=int, default=20)
p.add_argument("--bf16", action="store_true", help="forward under torch.autocast(bfloat16)")
p.add_argument("--text", help="train on random windows of this file's first 90%% (as mamba train) "
               "instead of random bytes")
p.add_argument("--lr", type=float, default=6e-4, help="peak learning rate")
p.add_argument("--lr-warmup", type=int, default=0, help="steps of linear warmup (mamba train's --warmup)")
p.add_argument("--decay-steps", type=int, default=0,
               help="cosine decay to lr/10 ending at this step (mamba train's schedule); 0: constant")
p.add_argument("--losses", help="write every step's loss here as JSON lines {step, loss} (as metrics.jsonl)")
p.add_argument("--allow-no-cc1d", action="store_true",
               help="run without causal-conv1d (Mamba2 then leaves its memory-efficient path)")
args = p.parse_args()

# ref/ first, so that mamba_ssm and causal_conv1d are the copies there; ref-build/ holds the
# compiled causal_conv1d_cuda.so, ref-build/scan/ selective_scan_cuda.so (ref-setup.sh build).
sys.path[:0] = [str(REF), str(REF.parent / "ref-build"), str(REF.parent / "ref-build" / "scan")]
import torch  # noqa: E402  (before the extension: the .so links against torch's libraries)
import torch.nn.functional as F  # noqa: E402

try:
    import causal_conv1d  # noqa: F401,E402  (imports causal_conv1d_cuda)
    cc1d, cc1d_err = True, None
except Exception as e:  # not built (ImportError), or built against another torch
    cc1d, cc1d_err = False, e
    for k in [k for k in sys.modules if k.split(".")[0] == "causal_conv1d"]:
        del sys.modules[k]
    sys.modules["causal_conv1d"] = None  # mamba_ssm's own `try: from causal_conv1d ...` then gets ImportError

# mamba_ssm.utils.{generation,hf} import transformers at module level; training never calls them.
try:
    import transformers.generation  # noqa: F401,E402
    import transformers.utils.hub  # noqa: F401,E402
except Exception:
    for k in [k for k in sys.modules if k.split(".")[0] == "transformers"]:
        del sys.modules[k]
    sys.path.insert(0, str(REF / "stubs"))
    print("note: transformers not importable; using ref/stubs/transformers (unused in training)")

# mixer_seq_simple imports Mamba3 for its layer table only; its Triton modules are new and
# unused here, so a failure there must not stop a Mamba2 measurement.
try:
    import mamba_ssm.modules.mamba3  # noqa: F401,E402
except Exception as e:
    print(f"note: mamba_ssm.modules.mamba3 does not import ({e!r}); an empty stand-in replaces it")
    stand_in = types.ModuleType("mamba_ssm.modules.mamba3")
    stand_in.Mamba3 = None
    sys.modules["mamba_ssm.modules.mamba3"] = stand_in

from mamba_ssm.models.config_mamba import MambaConfig  # noqa: E402
from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel  # noqa: E402
import mamba_ssm.ops.selective_scan_interface as ssi  # noqa: E402
import mamba_ssm.ops.triton.ssd_combined as ssd  # noqa: E402

ssm_cfg = {"layer": args.layer}
if args.layer == "Mamba1" and ssi.selective_scan_cuda is None:
    sys.exit("Mamba1 needs selective_scan_cuda (mamba's csrc): bash kernels/tools/ref-setup.sh build")
if args.layer == "Mamba1":
    path = "fast path: mamba_inner_fn (causal-conv1d CUDA conv, selective_scan_cuda, recomputing in backward)"
    if not cc1d:
        path = "WITHOUT causal-conv1d: nn.Conv1d + SiLU, selective_scan_fn, separate autograd ops"
        print(f"causal-conv1d is NOT importable ({cc1d_err}). The reference would run {path}.")
        if not args.allow_no_cc1d:
            sys.exit(2)
elif cc1d:
    assert ssd.causal_conv1d_fwd_function is not None
    path = "memory-efficient path: mamba_split_conv1d_scan_combined (causal-conv1d CUDA conv, fused SSD + gated RMSNorm + out_proj)"
else:
    path = ("WITHOUT causal-conv1d: use_mem_eff_path=False, i.e. in_proj, nn.Conv1d (cuDNN) + SiLU, "
            "mamba_chunk_scan_combined, RMSNormGated, out_proj as separate autograd ops")
    print(f"causal-conv1d is NOT importable ({cc1d_err}). The reference would run {path}.")
    if not args.allow_no_cc1d:
        print("Not the reference's training path: build it (bash kernels/tools/ref-setup.sh build) "
              "or pass --allow-no-cc1d to measure the fallback.")
        sys.exit(2)
    ssm_cfg["use_mem_eff_path"] = False  # the fused path calls causal_conv1d_fwd_function

torch.manual_seed(0)
dev = "cuda"
cfg = MambaConfig(d_model=args.d_model, n_layer=args.n_layer, vocab_size=256, ssm_cfg=ssm_cfg, rms_norm=True,
                  fused_add_norm=True, residual_in_fp32=True, d_intermediate=0, pad_vocab_size_multiple=8,
                  tie_embeddings=True)
model = MambaLMHeadModel(cfg, device=dev, dtype=torch.float32)
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
mixer = model.backbone.layers[0].mixer
settings = " ".join(f"{k} {getattr(mixer, k)}" for k in
                    ["d_state", "headdim", "chunk_size", "ngroups", "expand", "d_conv", "nheads", "use_mem_eff_path"]
                    if hasattr(mixer, k))
n_params = sum(t.numel() for t in model.parameters())  # the tied embedding once
gen = torch.Generator(device=dev).manual_seed(0)


text = None
if args.text:
    raw = Path(args.text).read_bytes()
    text = torch.tensor(list(raw[: len(raw) * 9 // 10]), dtype=torch.long, device=dev)


def batch():
    """Random bytes, or random windows of --text; targets are the next byte, as in a byte LM."""
    if text is None:
        seq = torch.randint(0, 256, (args.batch, args.seq_len + 1), device=dev, generator=gen)
    else:
        starts = torch.randint(0, len(text) - args.seq_len - 1, (args.batch, 1), device=dev, generator=gen)
        seq = text[starts + torch.arange(args.seq_len + 1, device=dev)]
    return seq[:, :-1], seq[:, 1:]


def lr_at(i):
    """mamba train's schedule (train/src/optim.rs lr_at) with min_lr = lr / 10."""
    if i < args.lr_warmup:
        return args.lr * (i + 1) / args.lr_warmup
    if args.decay_steps <= 0:
        return args.lr
    lo, progress = args.lr / 10, min(1.0, (i - args.lr_warmup) / max(1, args.decay_steps - args.lr_warmup))
    return lo + 0.5 * (args.lr - lo) * (1 + math.cos(math.pi * progress))


losses = open(args.losses, "w") if args.losses else None
n_step = 0


def step(x, y):
    global n_step
    for group in opt.param_groups:
        group["lr"] = lr_at(n_step)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.bf16):
        logits = model(x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    n_step += 1
    if losses:
        losses.write(f'{{"step": {n_step}, "loss": {loss.item()}, "tokens_per_s": 0}}\n')
    return loss


t0, first = time.time(), float("nan")
for _ in range(args.warmup):
    first = step(*batch()).item()
torch.cuda.synchronize()
warm_s = time.time() - t0

torch.cuda.reset_peak_memory_stats()
ms = []
for _ in range(args.steps):
    x, y = batch()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    loss = step(x, y)
    end.record()
    end.synchronize()
    ms.append(start.elapsed_time(end))
last = loss.item()
peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()

med = statistics.median(ms)
tokens = args.batch * args.seq_len
dtype = "bf16 autocast" if args.bf16 else "fp32"
print(f"reference MambaLMHeadModel {args.layer} {dtype}, d_model {args.d_model} x {args.n_layer}, batch "
      f"{args.batch} x {args.seq_len}, {n_params:,} parameters, {torch.cuda.get_device_name()}, torch "
      f"{torch.__version__}, float32 matmul precision '{torch.get_float32_matmul_precision()}'")
print(f"  mixer: {type(mixer).__name__} {settings}")
print(f"  path: {path}")
print(f"  warmup: {args.warmup} steps in {warm_s:.1f} s (includes Triton compile/autotune), loss {first:.4f}")
print(f"  timed: {args.steps} steps, median {med:.2f} ms/step (min {min(ms):.2f}, max {max(ms):.2f}), "
      f"{tokens / med * 1e3:,.0f} tokens/s, last loss {last:.4f}")
print(f"  peak memory over the timed steps: {peak / 2**30:.2f} GiB allocated ({peak / 1e9:.2f} GB), "
      f"{reserved / 2**30:.2f} GiB reserved by torch's caching allocator")
