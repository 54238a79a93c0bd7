#!/usr/bin/env bash
# Set up mlx-clip-finetune for use and for its tests, on macOS or Linux.
#   bash setup.sh          runtime + test/benchmark dependencies
#   bash setup.sh --runtime  only what fine-tuning needs
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
STARTED=$SECONDS
INSTALLED=()  # for the closing line

if [[ "$(uname -s)" == "Linux" ]]; then
  # OpenBLAS: MLX's Linux wheel ships a slow reference BLAS; mlx_clip puts OpenBLAS under it.
  # Chromium (tests only): the report test renders report.html in a real headless browser.
  PACKAGES=()
  ldconfig -p 2>/dev/null | grep -q libopenblas.so.0 || PACKAGES+=(libopenblas0-pthread)
  [[ "${1:-}" != "--runtime" ]] && ! command -v chromium >/dev/null && PACKAGES+=(chromium)
  if (( ${#PACKAGES[@]} )); then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    if command -v apt-get >/dev/null; then
      # Only what the packages need (no avahi, cups, samba, ...); apt's output goes to a log
      # that is shown only if it fails.
      APT_LOG=$(mktemp "${TMPDIR:-/tmp}/mlx-clip-setup-apt.XXXXXX")
      if ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
               --no-install-recommends "${PACKAGES[@]}"; } >"$APT_LOG" 2>&1; then
        cat "$APT_LOG" >&2
        echo "error: apt-get could not install ${PACKAGES[*]} (output above, kept in $APT_LOG)" >&2
        exit 1
      fi
      rm -f "$APT_LOG"
      INSTALLED+=("apt: ${PACKAGES[*]}")
    else
      echo "warning: install ${PACKAGES[*]} with your package manager (MLX is ~30x slower without OpenBLAS)" >&2
    fi
  fi
fi

if [[ "${1:-}" == "--runtime" ]]; then
  $PYTHON -m pip install -q -r requirements.txt
  INSTALLED+=("pip: requirements.txt")
else
  $PYTHON -m pip install -q -r requirements-dev.txt
  # OpenAI's BPE vocabulary for the tokenizer tests ships in this wheel (MIT); its
  # dependencies (torchvision) are not needed.
  $PYTHON -m pip install -q --no-deps open-clip-torch
  INSTALLED+=("pip: requirements-dev.txt, open-clip-torch")
fi
if [[ -f pyproject.toml ]]; then
  $PYTHON -m pip install -q --no-deps -e .   # the mlx_clip package and its llm plugin
  INSTALLED+=("mlx-clip-finetune (editable)")
fi
$PYTHON - <<'PY'
import mlx_clip, mlx_clip._blas as b
print("mlx_clip", mlx_clip.__version__, "| BLAS under MLX:", b.loaded_blas or "platform default")
PY
ELAPSED=$((SECONDS - STARTED))
printf -v SUMMARY '%s; ' "${INSTALLED[@]}"
echo "setup.sh: installed ${SUMMARY%; } in $((ELAPSED / 60)) min $((ELAPSED % 60)) s"
