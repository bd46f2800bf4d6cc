"""Token generation of the reference Mamba-1 (or, with --layer Mamba2, Mamba-2) byte LM (state-spaces/mamba's MambaLMHeadModel.generate,
run from its source in the git-ignored ref/, see kernels/tools/ref-setup.sh), timed so that our
engine's decode speed can be compared with it in the same device run. Random init (seed 0), fp32,
greedy (top_k=1), with and without the reference's CUDA-graph decoding (cg). Decode tokens/s =
batch * (new - 1) / (median total - median prefill+1), both generate calls timed the same way.
selective_scan_cuda is not built, so the prompt's scan (prefill) runs selective_scan_ref (torch);
the per-token step is the reference's own: selective_state_update (Triton) and causal_conv1d_update
(CUDA, once `bash kernels/tools/ref-setup.sh build` has built it there; torch ops otherwise).
Mamba-2 (the reference's defaults: d_state 128, headdim 64, one group): the prompt through
mamba_chunk_scan_combined (Triton), each token through selective_state_update and RMSNormGated
(Triton) and causal_conv1d_update.
Usage there, from the repo root, after `bash kernels/tools/ref-setup.sh here` here and carrying ref/:
  python3 kernels/tools/gen_ref.py --d-model 768 --n-layer 24
"""
import argparse
import statistics
import sys
import time
import types
from pathlib import Path

REF = Path(__file__).resolve().parents[2] / "ref"

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--d-model", type=int, default=768)
p.add_argument("--n-layer", type=int, default=24)
p.add_argument("--layer", default="Mamba1", choices=["Mamba1", "Mamba2"])
p.add_argument("--batch", default="1", help="comma-separated batch sizes")
p.add_argument("--tokens", type=int, default=512, help="new tokens per row (at least 2)")
p.add_argument("--prompt", type=int, default=16, help="prompt tokens (random bytes, one prompt per row)")
p.add_argument("--reps", type=int, default=5)
p.add_argument("--no-cg-off", action="store_true", help="skip the cg=False rows (run for batch 1 only)")
p.add_argument("--fused-add-norm", action="store_true",
               help="residual add + RMSNorm in one Triton kernel, as pretrained configs (default: add, then norm)")
args = p.parse_args()
batches = [int(b) for b in args.batch.split(",")]
assert args.tokens >= 2 and args.prompt >= 1 and min(batches) >= 1

# The import preamble of lm_ref.py: ref/ and ref-build/ (causal_conv1d_cuda.so) first on the path.
sys.path[:0] = [str(REF), str(REF.parent / "ref-build"), str(REF.parent / "ref-build" / "scan")]
import torch  # noqa: E402  (before the extension: the .so links against torch's libraries)

try:
    import causal_conv1d  # noqa: F401,E402  (imports causal_conv1d_cuda)
    cc1d_err = None
except Exception as e:  # not built (ImportError), or built against another torch
    cc1d_err = e
    for k in [k for k in sys.modules if k.split(".")[0] == "causal_conv1d"]:
        del sys.modules[k]
    sys.modules["causal_conv1d"] = None  # mamba_ssm's `try: from causal_conv1d ...` then gets ImportError

# mamba_ssm.utils.generation needs transformers.generation's GenerateDecoderOnlyOutput and
# TextStreamer (a type hint); mamba_ssm.utils.hf needs WEIGHTS_NAME, CONFIG_NAME, cached_file.
try:
    from transformers.generation import GenerateDecoderOnlyOutput, TextStreamer  # noqa: F401,E402
    from transformers.utils import WEIGHTS_NAME, CONFIG_NAME  # noqa: F401,E402
    from transformers.utils.hub import cached_file  # noqa: F401,E402
except Exception:
    for k in [k for k in sys.modules if k.split(".")[0] == "transformers"]:
        del sys.modules[k]
    sys.path.insert(0, str(REF / "stubs"))

try:  # mixer_seq_simple imports Mamba3 for its layer table only
    import mamba_ssm.modules.mamba3  # noqa: F401,E402
except Exception as e:
    print(f"note: mamba_ssm.modules.mamba3 does not import ({e!r}); an empty stand-in replaces it")
    stand_in = types.ModuleType("mamba_ssm.modules.mamba3")
    stand_in.Mamba3 = None
    sys.modules["mamba_ssm.modules.mamba3"] = stand_in

import mamba_ssm.modules.mamba_simple as ms  # noqa: E402
import mamba_ssm.ops.selective_scan_interface as ssi  # noqa: E402  (its selective_scan_cuda import is in a try)
from mamba_ssm.models.config_mamba import MambaConfig  # noqa: E402
from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel  # noqa: E402

# Mamba.forward with inference_params (the prompt, every generate call) calls the module global
# selective_scan_fn, which needs selective_scan_cuda: the torch reference scan replaces it.
if ssi.selective_scan_cuda is None:
    ms.selective_scan_fn = ssi.selective_scan_ref
    prefill_scan = "selective_scan_ref (torch, selective_scan_cuda absent)"
else:
    prefill_scan = "selective_scan_fn (selective_scan_cuda)"


def no_fast_path(*a, **k):  # taken only when inference_params is None, which generate never passes
    raise RuntimeError("mamba_inner_fn reached: generate should never take Mamba1's fast path")


ms.mamba_inner_fn = no_fast_path

dev = "cuda"
torch.manual_seed(0)
cfg = MambaConfig(d_model=args.d_model, n_layer=args.n_layer, vocab_size=256, ssm_cfg={"layer": args.layer},
                  rms_norm=True, residual_in_fp32=True, fused_add_norm=args.fused_add_norm,
                  pad_vocab_size_multiple=8, d_intermediate=0)
model = MambaLMHeadModel(cfg, device=dev, dtype=torch.float32).eval()
assert type(model.backbone.layers[0].mixer).__name__ == {"Mamba1": "Mamba", "Mamba2": "Mamba2"}[args.layer]
n_params = sum(t.numel() for t in model.parameters())  # the tied embedding once

commit = (REF / "COMMIT").read_text().strip().replace("\n", ", ") if (REF / "COMMIT").exists() else "no ref/COMMIT"
print(f"reference generate (mamba_ssm MambaLMHeadModel, {args.layer}), {n_params:,} parameters, fp32, "
      f"{torch.cuda.get_device_name()}, torch {torch.__version__}, float32 matmul precision "
      f"'{torch.get_float32_matmul_precision()}', ref: {commit}")
print(f"  step kernels: selective_state_update: {'triton' if ms.selective_state_update else 'torch'}; "
      f"causal_conv1d_update: {'cuda' if ms.causal_conv1d_update else 'torch'}"
      + (f" (causal_conv1d not importable: {cc1d_err!r})" if cc1d_err else ""))
print(f"  prefill: scan {prefill_scan}; conv {'causal_conv1d_fn (cuda)' if ms.causal_conv1d_fn else 'nn.Conv1d'}; "
      f"norms: Triton rms_norm_fn (RMSNorm), fused_add_norm {args.fused_add_norm}")


def timed(input_ids, max_length, cg):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(input_ids, max_length=max_length, top_k=1, cg=cg)
    torch.cuda.synchronize()
    assert out.shape == (input_ids.shape[0], max_length), out.shape
    return time.perf_counter() - t0


gen = torch.Generator(device=dev).manual_seed(0)
for b in batches:
    prompt = torch.randint(0, 256, (b, args.prompt), device=dev, generator=gen)
    total_len, prefill_len = args.prompt + args.tokens, args.prompt + 1
    for cg in [True] + ([False] if b == 1 and not args.no_cg_off else []):
        # A graph cache of another batch size holds states of that size: start afresh, so the
        # warm-up captures the graph for (b, total_len), which the prefill+1 and timed calls reuse.
        model._decoding_cache = None
        torch.cuda.empty_cache()
        t0 = time.perf_counter()
        timed(prompt, total_len, cg)
        timed(prompt, prefill_len, cg)
        warm = time.perf_counter() - t0
        if cg:
            assert model._decoding_cache.max_batch_size == b and model._decoding_cache.max_seqlen == total_len
        pre = statistics.median(timed(prompt, prefill_len, cg) for _ in range(args.reps))
        tot = statistics.median(timed(prompt, total_len, cg) for _ in range(args.reps))
        rate = b * (args.tokens - 1) / (tot - pre)
        print(f"reference generate {args.layer} d_model {args.d_model} x {args.n_layer}, batch {b}, cg {cg}: "
              f"{rate:.0f} tokens/s ({args.tokens} new tokens, prefill+1 {pre * 1e3:.1f} ms, "
              f"total {tot * 1e3:.0f} ms, median of {args.reps}; warm-up {warm:.1f} s)", flush=True)
