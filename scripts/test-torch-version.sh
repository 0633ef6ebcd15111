#!/usr/bin/env bash
# Runs the Python package's test suite against one torch release from PyPI, in a
# fresh virtual environment (nothing else installed by hand):
#
#   scripts/test-torch-version.sh 2.4.0        # the oldest supported
#   scripts/test-torch-version.sh 2.15.0       # the newest on PyPI
#
# The venv lives under ${PHYSCON_VENVS:-/tmp/physcon-venvs}/torch-<version>
# (torch with its CUDA libraries is ~5 GB; delete it after). The equality test
# against the Rust crate runs when target/crosscheck.npz exists (scripts/test.sh
# writes it); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: scripts/test-torch-version.sh <torch version> [pytest args]}"
shift
venv="${PHYSCON_VENVS:-/tmp/physcon-venvs}/torch-${version}"
python="${PYTHON:-python3}"
if [[ ! -f "${venv}/.physcon-complete" ]]; then
    rm -rf "${venv}"
    "${python}" -m venv "${venv}"
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "torch==${version}" pytest numpy
    touch "${venv}/.physcon-complete"
fi
start=$(date +%s%N)
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python
echo "physcon: pip install ./python took $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2
if [[ -f target/crosscheck.npz ]]; then
    export PHYSCON_CROSSCHECK="${PWD}/target/crosscheck.npz"
fi
# From the repository root, so that `import physcon` finds the installed wheel, not python/physcon.
"${venv}/bin/python" -c 'import torch, physcon; print(f"physcon {physcon.__version__} on torch {torch.__version__} from {physcon.__file__}")'
"${venv}/bin/python" -m pytest -q python/tests "$@"
