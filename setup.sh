#!/usr/bin/env bash
# Set up mlx-clip-finetune for use and for its tests, on macOS or Linux, in a virtual
# environment (.venv, or $VENV): `pip install -e '.[dev]'` there, nothing in the system Python.
#   bash setup.sh            the package + its test/benchmark stack
#   bash setup.sh --runtime  only what fine-tuning needs (pip install -e .)
# Then: . .venv/bin/activate (or run .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STARTED=$SECONDS
INSTALLED=()  # for the closing line

if [[ "$(uname -s)" == "Linux" ]]; then
  # OpenBLAS: MLX's Linux wheel ships a slow reference BLAS; mlx_clip puts OpenBLAS under it.
  # Chromium (tests only): the report test renders report.html in a real headless browser.
  PACKAGES=()
  ldconfig -p 2>/dev/null | grep -q libopenblas.so.0 || PACKAGES+=(libopenblas0-pthread)
  # Debian's Python makes virtual environments only with python3-venv (ensurepip).
  [[ -x "$VENV/bin/python" ]] || $PYTHON -c "import ensurepip" 2>/dev/null || PACKAGES+=(python3-venv)
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

if [[ ! -x "$VENV/bin/python" ]]; then
  if ! $PYTHON -m venv "$VENV"; then
    echo "error: $PYTHON could not create the virtual environment $VENV (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
  INSTALLED+=("venv: $VENV")
fi
PYTHON="$VENV/bin/python"
if [[ "${1:-}" == "--runtime" ]]; then
  $PYTHON -m pip install -q -e .   # the mlx_clip package, its commands and its llm plugin
  INSTALLED+=("pip: -e . (mlx-clip-finetune, editable)")
else
  $PYTHON -m pip install -q -e '.[dev]'
  # OpenAI's BPE vocabulary for the tokenizer tests ships in this wheel (MIT); its
  # dependencies (torchvision) are not needed.
  $PYTHON -m pip install -q --no-deps open-clip-torch
  INSTALLED+=("pip: -e '.[dev]' (mlx-clip-finetune, editable, and its test stack), open-clip-torch")
fi
$PYTHON - <<'PY'
import mlx_clip, mlx_clip._blas as b
print("mlx_clip", mlx_clip.__version__, "| BLAS under MLX:", b.loaded_blas or "platform default")
PY
ELAPSED=$((SECONDS - STARTED))
printf -v SUMMARY '%s; ' "${INSTALLED[@]}"
echo "setup.sh: installed ${SUMMARY%; } in $((ELAPSED / 60)) min $((ELAPSED % 60)) s; now: . $VENV/bin/activate"
