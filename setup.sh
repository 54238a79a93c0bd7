#!/usr/bin/env bash
# Set up mlx-clip-finetune for use and for its tests, on macOS or Linux.
#   bash setup.sh          runtime + test/benchmark dependencies
#   bash setup.sh --runtime  only what fine-tuning needs
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

if [[ "$(uname -s)" == "Linux" ]]; then
  # OpenBLAS: MLX's Linux wheel ships a slow reference BLAS; mlx_clip puts OpenBLAS under it.
  # Chromium (tests only): the report test renders report.html in a real headless browser.
  PACKAGES=()
  ldconfig -p 2>/dev/null | grep -q libopenblas.so.0 || PACKAGES+=(libopenblas0-pthread)
  [[ "${1:-}" != "--runtime" ]] && ! command -v chromium >/dev/null && PACKAGES+=(chromium)
  if (( ${#PACKAGES[@]} )); then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    if command -v apt-get >/dev/null; then
      $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}"
    else
      echo "warning: install ${PACKAGES[*]} with your package manager (MLX is ~30x slower without OpenBLAS)" >&2
    fi
  fi
fi

if [[ "${1:-}" == "--runtime" ]]; then
  $PYTHON -m pip install -q -r requirements.txt
else
  $PYTHON -m pip install -q -r requirements-dev.txt
  # OpenAI's BPE vocabulary for the tokenizer tests ships in this wheel (MIT); its
  # dependencies (torchvision) are not needed.
  $PYTHON -m pip install -q --no-deps open-clip-torch
fi
if [[ -f pyproject.toml ]]; then
  $PYTHON -m pip install -q --no-deps -e .   # the mlx_clip package and its llm plugin
fi
$PYTHON - <<'PY'
import mlx_clip, mlx_clip._blas as b
print("mlx_clip", mlx_clip.__version__, "| BLAS under MLX:", b.loaded_blas or "platform default")
PY
