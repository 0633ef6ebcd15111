#!/usr/bin/env bash
# Runs a command with libtorch 2.13.0 available to tch 0.26.
#
# A user's own setup wins: if LIBTORCH or LIBTORCH_USE_PYTORCH is already set,
# the command runs as it is. Otherwise torch==2.13.0 is installed from PyPI into
# a cached virtual environment outside the repository (once, ~4.6 GB) and the
# build links against it through LIBTORCH_USE_PYTORCH=1.
#
#   scripts/with-libtorch.sh cargo test
#
# PHYSCON_CACHE overrides the cache folder (default ~/.cache/physcon).
set -euo pipefail

TORCH_VERSION=2.13.0

if [[ -n "${LIBTORCH:-}" ]]; then
    lib="${LIBTORCH}/lib"
    export LD_LIBRARY_PATH="${lib}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
    exec "$@"
fi

if [[ -n "${LIBTORCH_USE_PYTORCH:-}" ]]; then
    # The user's python (first on PATH) provides torch; find its lib folder for run time.
    lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH="${lib}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
    exec "$@"
fi

cache="${PHYSCON_CACHE:-${HOME}/.cache/physcon}"
venv="${cache}/venv-torch-${TORCH_VERSION}"
python="${PYTHON:-python3}"

# A venv's console scripts (pip, torchrun) hard-code the venv's path in their
# shebang, so it is built where it stays; a marker written last tells a complete
# install from an interrupted one, which is wiped and redone.
if [[ ! -f "${venv}/.physcon-complete" ]] \
    || ! "${venv}/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${TORCH_VERSION}')" 2>/dev/null; then
    echo "physcon: installing torch==${TORCH_VERSION} into ${venv} (one time, a few minutes)" >&2
    mkdir -p "${cache}"
    rm -rf "${venv}" "${venv}.partial"
    "${python}" -m venv "${venv}"
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "torch==${TORCH_VERSION}"
    touch "${venv}/.physcon-complete"
fi

site=$("${venv}/bin/python" -c 'import site; print(site.getsitepackages()[0])')
export PATH="${venv}/bin:${PATH}"
export LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="${site}/torch/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
exec "$@"
