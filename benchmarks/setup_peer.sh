#!/usr/bin/env bash
# Builds the virtualenv holding the peer (Triton Model Navigator 0.14) for
# benchmarks/optimize_vs_peer.py, as /work/shared/ANCHORS.md describes.
# Usage: benchmarks/setup_peer.sh [VENV_DIR]   (default: .venv-peer in the repo root)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo_root/.venv-peer}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import model_navigator, torch, onnxruntime' 2>/dev/null; then
    echo "peer venv ready: $venv" >&2
    exit 0
fi

"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)

# The exact pin matters: this host's pip finds a local CPU wheel for 2.13.0;
# any other version would pull PyPI's CUDA build (GBs of nvidia-* wheels).
# torch, onnx & co. go in one resolver pass with the peer's own requirements
# (minus tensorrt, onnxruntime-gpu and nvidia-modelopt, which cannot install
# here) so that "numpy<2" is honoured by everything at once.
"${pip[@]}" \
    "torch==2.13.0" onnx onnxruntime onnxscript \
    dacite fire jsonlines loguru "numpy<2" onnx_graphsurgeon "packaging~=24.1" \
    polygraphy psutil py-cpuinfo "pynvml~=11.5" "python-slugify~=8.0" pyyaml \
    tabulate wrapt pyee rich "tritonclient[grpc]"

# --no-deps: its declared deps include tensorrt and onnxruntime-gpu.
"${pip[@]}" --no-deps "triton-model-navigator==0.14.0"

"$venv/bin/python" -c 'import torch, model_navigator as nav; print("peer venv ready:", nav.__version__, "torch", torch.__version__)' >&2
