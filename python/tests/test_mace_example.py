"""The MACE example (examples/python/mace_consistency.py) runs and prints finite losses.

Needs mace-torch (``pip install mace-torch``, or the package's ``[mace]``
extra); skipped without it (CI does not install it).
"""

import math
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("mace")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(ROOT, "examples", "python", "mace_consistency.py")
TERMS = ["total", "energy", "forces", "denoising", "optimality", "score"]


def test_mace_example_runs_and_prints_finite_losses():
    out = subprocess.run(
        [sys.executable, EXAMPLE, "--steps", "2", "--molecules", "4"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    steps = [line for line in out.stdout.splitlines() if line.startswith("step ")]
    assert len(steps) == 2, out.stdout
    for line in steps:
        values = dict(re.findall(r"(\w+) (\S+)", line.split(None, 2)[2]))
        assert sorted(values) == sorted(TERMS), line
        for name, value in values.items():
            assert math.isfinite(float(value)), f"{name} is not finite: {line}"
    assert "2 steps in" in out.stdout
