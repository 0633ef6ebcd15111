#!/usr/bin/env bash
# Builds the Python package `python/` (release) and installs it, with maturin
# from PyPI, into the Python environment that scripts/with-libtorch.sh picks:
# the cached torch 2.11.0 venv by default, or your own environment when
# LIBTORCH_USE_PYTORCH=1 is set (its first python3 must have torch 2.11.0).
#
#   scripts/install-python.sh                           # into ~/.cache/physcon/venv-torch-2.11.0
#   LIBTORCH_USE_PYTORCH=1 scripts/install-python.sh    # into the active environment
set -euo pipefail
cd "$(dirname "$0")/.."
# Always `python -m pip`: a venv's pip script can carry a stale path.
pip=(scripts/with-libtorch.sh python3 -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "maturin>=1.5,<2"
# `--no-build-isolation`: the build must see this environment's torch (torch-sys
# links its libtorch and asks it for the C++ ABI); an isolated build has none.
"${pip[@]}" --no-build-isolation ./python
