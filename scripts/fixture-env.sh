#!/usr/bin/env bash
# Set up, reproducibly, the Python environment that the fixture scripts (scripts/make_*.py,
# scripts/diag_tiny_base.py, scripts/load_adapter.py) and the PyTorch side of `dod-bench` need, on
# Debian 12: Debian's PyTorch 1.13, torchvision and scikit-image 0.19.3 (apt), and a venv in ./venv
# that sees them (--system-site-packages) with the pinned PyPI packages below. The toolkit and its
# tests never run Python; only regenerating fixtures and the reference side of benchmarks do.
# Usage: bash scripts/fixture-env.sh            then run the `export PYTHON=...` line it prints
# DOD_SKIP_APT=1 skips the apt step (packages already present, or no root).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="python3-torch python3-torchvision python3-venv python3-skimage"
# The versions the committed fixtures were made with: diffusers 0.21.4 and transformers 4.33.3 (on
# torch 1.13), huggingface_hub below 0.20 (0.19.4 then), scikit-image 0.19.3 (Debian's, the version
# PromptIR's metrics ran with; pinned so that pip keeps it), peft 0.7.1 (the PEFT names of
# scripts/make_dod_import_fixture.py).
PIP_PACKAGES=(diffusers==0.21.4 transformers==4.33.3 safetensors lpips tensorboard h5py
              scikit-image==0.19.3 "huggingface_hub<0.20" psutil pyyaml)
# PEFT for scripts/load_adapter.py (the adapter's LoRA in diffusers): 0.7.1, the first whose LoRA layers
# pass diffusers 0.21's extra `scale` argument through, and its accelerate; both without their
# dependencies, since they ask for torch >= 1.13.0 and pip reads Debian's 1.13.0a0 as older.
PIP_NO_DEPS=(peft==0.7.1 accelerate==0.24.1)

# shellcheck disable=SC2086  # the list is split into words on purpose
[ "${DOD_SKIP_APT:-0}" = 1 ] || bash scripts/apt-install.sh fixture-env $APT_PACKAGES

# Debian's interpreter, the one that sees the python3-* packages (a python3 of pyenv or conda earlier
# on PATH does not).
DEBIAN_PYTHON=/usr/bin/python3
if [ ! -x venv/bin/python ]; then
    echo "fixture-env: creating venv/ from $DEBIAN_PYTHON (--system-site-packages)"
    "$DEBIAN_PYTHON" -m venv --system-site-packages venv
elif ! grep -qx 'include-system-site-packages = true' venv/pyvenv.cfg ||
     ! venv/bin/python -c 'import torch' 2>/dev/null; then
    echo "fixture-env: venv/ exists but does not see Debian's torch (not made by this script?);" \
         "remove it and run this script again" >&2
    exit 1
fi
echo "fixture-env: installing ${PIP_PACKAGES[*]}"
venv/bin/python -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "${PIP_NO_DEPS[@]}"

venv/bin/python - <<'PY'
import diffusers, h5py, lpips, numpy, peft, safetensors, skimage, tensorboard, torch, torchvision, transformers
import huggingface_hub
print("fixture-env: torch %s, torchvision %s, diffusers %s, transformers %s, huggingface_hub %s, peft %s, "
      "scikit-image %s, numpy %s" % (torch.__version__, torchvision.__version__, diffusers.__version__,
      transformers.__version__, huggingface_hub.__version__, peft.__version__, skimage.__version__, numpy.__version__))
PY
echo "fixture-env: ready; for the fixture scripts and dod-bench run:"
echo "export PYTHON=$PWD/venv/bin/python"
