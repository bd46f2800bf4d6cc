#!/usr/bin/env bash
# The reference Mamba (state-spaces/mamba) and causal-conv1d run from source in the git-ignored
# ref/, so that the GPU machine (torch, triton, no internet, no pip) can run the reference LM.
#   bash kernels/tools/ref-setup.sh here    # here: copy the Python, causal-conv1d's csrc and mamba's
#                                           # selective-scan csrc into ref/
#   bash kernels/tools/ref-setup.sh build   # there, from the repo root: compile causal_conv1d_cuda and
#                                           # selective_scan_cuda (Mamba-1's fused path) side by side
#                                           # into ref-build, ending with a DONE or FAILED marker
#   bash kernels/tools/ref-setup.sh build scan   # there: selective_scan_cuda only (scan_ref.py)
#   bash kernels/tools/ref-setup.sh running      # exit status 0 while a build is running (for the
#                                                # bench scripts, which start one in the background)
# The build goes to the git-ignored ref-build/, outside ref/, so that carrying ref/ again leaves
# it in place on a warm machine. docs/SSD.md and kernels/tools/lm_ref.py use it.
set -euo pipefail
cd "$(dirname "$0")/../.."
MAMBA_GIT=${MAMBA_GIT:-/work/.mirror/state-spaces+mamba/repo}
MAMBA_REV=${MAMBA_REV:-e9594ce}
CC1D_GIT=${CC1D_GIT:-/work/.mirror/Dao-AILab+causal-conv1d/repo}
CC1D_REV=${CC1D_REV:-HEAD}
BUILD=ref-build

# What MambaLMHeadModel with Mamba2 (and the SSD scan that ssd_ref.py times) imports at module
# level. Left out: ops/tilelang, ops/cute (Mamba-3 MIMO/step kernels, imported in a try; tilelang/cutlass absent).
MAMBA_FILES=(
  mamba_ssm/models/__init__.py mamba_ssm/models/config_mamba.py mamba_ssm/models/mixer_seq_simple.py
  mamba_ssm/modules/__init__.py mamba_ssm/modules/block.py mamba_ssm/modules/mamba2.py
  mamba_ssm/modules/mamba3.py mamba_ssm/modules/mamba_simple.py mamba_ssm/modules/mha.py mamba_ssm/modules/mlp.py
  mamba_ssm/distributed mamba_ssm/utils mamba_ssm/ops/__init__.py mamba_ssm/ops/selective_scan_interface.py
  mamba_ssm/ops/triton
)

here() {
  mkdir -p ref
  rm -rf ref/mamba_ssm ref/causal_conv1d ref/cc1d-csrc ref/scan-csrc ref/stubs ref/COMMIT
  git --git-dir="$MAMBA_GIT" archive "$MAMBA_REV" -- "${MAMBA_FILES[@]}" csrc/selective_scan | tar -x -C ref
  mv ref/csrc/selective_scan ref/scan-csrc && rmdir ref/csrc
  # upstream's __init__ imports every mixer (and selective_scan_cuda's wrapper); keep the package
  # importable piecemeal, as ssd_ref.py imports it
  cat > ref/mamba_ssm/__init__.py <<'EOF'
# Minimal on purpose (kernels/tools/ref-setup.sh): upstream's imports every mixer eagerly.
EOF
  git --git-dir="$CC1D_GIT" archive "$CC1D_REV" -- causal_conv1d csrc | tar -x -C ref
  mv ref/csrc ref/cc1d-csrc
  # mamba_ssm.utils.generation and .hf import transformers at module level; training never
  # calls them. lm_ref.py puts ref/stubs on sys.path only when a real transformers fails.
  mkdir -p ref/stubs/transformers/utils
  echo '# Stub (ref-setup.sh): names mamba_ssm imports at module level; unused in training.' \
    > ref/stubs/transformers/__init__.py
  cat > ref/stubs/transformers/generation.py <<'EOF'
# Stub (ref-setup.sh): mamba_ssm.utils.generation names these in signatures only.
class GenerateDecoderOnlyOutput(dict):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.__dict__.update(kw)


class TextStreamer:
    pass
EOF
  printf '%s\n' '# Stub (ref-setup.sh): mamba_ssm.utils.hf (from_pretrained only).' \
    'WEIGHTS_NAME = "pytorch_model.bin"' 'CONFIG_NAME = "config.json"' > ref/stubs/transformers/utils/__init__.py
  printf '%s\n' '# Stub (ref-setup.sh): no hub on the GPU machine.' 'def cached_file(*a, **k):' \
    '    raise OSError("transformers stub: no hub access")' > ref/stubs/transformers/utils/hub.py
  printf 'state-spaces/mamba %s\nDao-AILab/causal-conv1d %s\n' \
    "$(git --git-dir="$MAMBA_GIT" rev-parse "$MAMBA_REV")" "$(git --git-dir="$CC1D_GIT" rev-parse "$CC1D_REV")" > ref/COMMIT
  check_imports
  echo "== ref/ ($(du -sh ref | cut -f1), the build is in ref-build/)"
  cat ref/COMMIT
  for d in ref/mamba_ssm/* ref/causal_conv1d ref/cc1d-csrc ref/scan-csrc ref/stubs; do
    [ -e "$d" ] && printf '  %-40s %3d files %s\n' "$d" "$(find "$d" -type f | wc -l)" "$(du -sh "$d" | cut -f1)"
  done
}

# Every module-level import of the copied Python must resolve in ref/ (or ref/stubs), be what
# the GPU machine has (torch, triton, einops, huggingface_hub, packaging, the standard library,
# causal_conv1d_cuda once built), or sit in a try that catches its ImportError.
check_imports() {
  python3 - <<'PY'
import ast, pathlib, sys
roots = [pathlib.Path("ref"), pathlib.Path("ref/stubs")]
there = {"torch", "triton", "einops", "huggingface_hub", "packaging", "causal_conv1d_cuda", "selective_scan_cuda"}
def local(mod):
    parts = mod.split(".")
    return any((r.joinpath(*parts).with_suffix(".py")).is_file() or (r.joinpath(*parts) / "__init__.py").is_file()
               for r in roots)
def guarded(stack):
    for n in stack:
        if isinstance(n, ast.Try):
            names = {ast.unparse(h.type) if h.type else "" for h in n.handlers}
            if names & {"ImportError", "ModuleNotFoundError", "Exception", ""}:
                return True
    return False
bad, optional = [], []
def visit(node, stack, path):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return  # imported when called: not on the import chain
    if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
        mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for m in mods:
            top = m.split(".")[0]
            ok = local(m) if local(top) else (top in there or top in sys.stdlib_module_names)
            if not ok:
                (optional if guarded(stack) else bad).append(f"{path}:{node.lineno}: {m}")
    for child in ast.iter_child_nodes(node):
        visit(child, stack + [node], path)
for py in sorted(pathlib.Path("ref").rglob("*.py")):
    visit(ast.parse(py.read_text()), [], py)
print("imports missing but guarded (try/except ImportError):")
print("\n".join("  " + s for s in optional) or "  none")
if bad:
    sys.exit("imports that would fail:\n" + "\n".join("  " + s for s in bad))
print("every unguarded module-level import resolves")
PY
}

# compile NAME SRC_DIR BUILD_DIR JOBS SOURCES..: one torch extension with the flags of the
# projects' setup.py (sm_90 only; nvcc --threads 4 as there), into BUILD_DIR.
compile() {
  local name=$1 src=$2 dir=$3 jobs=$4; shift 4
  mkdir -p "$dir" && rm -f "$dir/lock"  # torch's build lock, stale if an earlier build was killed
  MAX_JOBS=$jobs TORCH_CUDA_ARCH_LIST=9.0 python3 - "$name" "$src" "$dir" "$@" <<'PY'
import sys
from torch.utils.cpp_extension import load
name, src, build, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
nvcc = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
        "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math",
        "--ptxas-options=-v", "-lineinfo", "-gencode", "arch=compute_90,code=sm_90", "--threads", "4"]
m = load(name=name, sources=[f"{src}/{f}" for f in files], extra_cflags=["-O3", "-std=c++17"],
         extra_cuda_cflags=nvcc, extra_include_paths=[src], build_directory=build, verbose=False)
print("built", m.__file__)
PY
}

# Both extensions at once (16 CPUs: the scan's 10 sources and causal-conv1d's 4), or with
# `scan` the scan's alone; DONE when what was asked is built. causal_conv1d_cuda goes to
# ref-build/ (the name causal_conv1d/cpp_functions.py imports), selective_scan_cuda to
# ref-build/scan/ (torch's lock is per build directory).
build() {
  mkdir -p "$BUILD"
  rm -f "$BUILD/DONE" "$BUILD/FAILED"
  if [ ! -d ref/cc1d-csrc ] || [ ! -d ref/scan-csrc ]; then  # the marker still tells a waiting script
    echo "no ref/cc1d-csrc or ref/scan-csrc: run '$0 here' where the mirrors are, carry ref/" | tee "$BUILD/FAILED" >&2
    exit 2
  fi
  echo $$ > "$BUILD/PID"
  local start=$SECONDS scan cc1d sc
  compile selective_scan_cuda ref/scan-csrc "$BUILD/scan" 10 selective_scan.cpp selective_scan_fwd_fp32.cu \
    selective_scan_fwd_fp16.cu selective_scan_fwd_bf16.cu selective_scan_bwd_fp32_real.cu \
    selective_scan_bwd_fp32_complex.cu selective_scan_bwd_fp16_real.cu selective_scan_bwd_fp16_complex.cu \
    selective_scan_bwd_bf16_real.cu selective_scan_bwd_bf16_complex.cu > "$BUILD/scan.log" 2>&1 &
  local scan=$!
  if [ "${1:-}" = scan ]; then
    cc1d=0
  else
    compile causal_conv1d_cuda ref/cc1d-csrc "$BUILD" 4 causal_conv1d.cpp causal_conv1d_fwd.cu \
      causal_conv1d_bwd.cu causal_conv1d_update.cu > "$BUILD/cc1d.log" 2>&1 && cc1d=0 || cc1d=$?
  fi
  wait $scan && sc=0 || sc=$?
  if [ $cc1d = 0 ] && [ $sc = 0 ]; then
    local what="selective_scan_cuda and causal_conv1d_cuda"
    [ "${1:-}" = scan ] && what="selective_scan_cuda (only)"
    echo "$what built in $((SECONDS - start)) s" | tee "$BUILD/DONE"
  else
    tail -n 20 "$BUILD/cc1d.log" "$BUILD/scan.log"
    echo "build FAILED after $((SECONDS - start)) s (causal-conv1d rc $cc1d, scan rc $sc)" | tee "$BUILD/FAILED"
    exit 1
  fi
}

# Whether the build that wrote ref-build/PID is still running. The PID alone does not say: a
# build killed with the device call that started it leaves its PID file, and a later call may
# give that number to another process (session 14's decode-bench then waited for nothing and ran
# the reference without its extensions), so the process must also be ref-setup.sh.
running() {
  local pid
  pid=$(cat "$BUILD/PID" 2>/dev/null) && [ -n "$pid" ] && [ ! -f "$BUILD/DONE" ] && [ ! -f "$BUILD/FAILED" ] \
    && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'ref-setup.sh build'
}

case "${1:-}" in
  here) here ;;
  build) build "${2:-}" ;;
  running) running ;;
  *) echo "usage: $0 here|build [scan]|running" >&2; exit 2 ;;
esac
