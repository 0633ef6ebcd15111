#!/usr/bin/env bash
# The project's tests, as CI runs them (`.ci/run`) on a fresh machine:
#
#   1. `cargo test` (the library, the two-stage example, doctests), and the
#      library's docs built without any libtorch, as docs.rs builds them
#      (feature doc-only, warnings denied);
#   2. the Rust crate's values and gradients on fixed inputs, written to
#      target/crosscheck.npz (examples/python_crosscheck.rs);
#   3. the pure-Python package `python/` installed with pip into the torch
#      environment of scripts/with-libtorch.sh, then its pytest suite: the
#      equality with the Rust crate (from step 2), the plain-PyTorch references,
#      the errors, pickling and DataLoader workers, and the 2-process DDP test.
#
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/with-libtorch.sh cargo test "$@"
env -u LIBTORCH -u LIBTORCH_USE_PYTORCH CARGO_TARGET_DIR=target/doc-only RUSTDOCFLAGS="-D warnings" \
    cargo doc --quiet --no-deps -p physcon --features doc-only
scripts/with-libtorch.sh cargo run --quiet --example python_crosscheck -- target/crosscheck.npz
pip=(scripts/with-libtorch.sh python3 -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" pytest numpy
# As a user installs it (a pure-Python wheel: no compiler, no Rust); --force-reinstall
# so that an edited checkout is what the tests import.
"${pip[@]}" --force-reinstall --no-deps ./python
PHYSCON_CROSSCHECK="${PWD}/target/crosscheck.npz" scripts/with-libtorch.sh python3 -m pytest -q python/tests
