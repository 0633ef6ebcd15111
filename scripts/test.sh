#!/usr/bin/env bash
# The project's tests, as CI runs them (`.ci/run`) on a fresh machine:
#
#   1. `cargo test` (the library, the two-stage example, doctests);
#   2. the Python package `python/` built once (release) and installed into the
#      torch environment of scripts/with-libtorch.sh (scripts/install-python.sh),
#      then its pytest suite, the 2-process DDP test included.
#
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/with-libtorch.sh cargo test "$@"
scripts/install-python.sh
scripts/with-libtorch.sh python3 -m pip install --quiet --disable-pip-version-check pytest
scripts/with-libtorch.sh python3 -m pytest -q python/tests
