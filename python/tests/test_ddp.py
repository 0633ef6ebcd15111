"""Data-parallel training (examples/python/train_ddp.py) on 2 gloo processes:
after several Adam steps with optimality and score consistency, the
parameters are identical on both ranks and equal to a one-process run on the
union of the two ranks' batches, for both recipes (DDP around one module whose
forward is the whole loss; no wrapper and one all_reduce of the gradients)."""

import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRAINER = os.path.join(ROOT, "examples", "python", "train_ddp.py")
COMMON = ["--frames", "48", "--steps", "5", "--dtype", "float64", "--log-every", "1"]


def run(args, processes):
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    out = subprocess.run(launcher + [TRAINER] + COMMON + args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def load(path):
    return torch.load(path, weights_only=True)


def worst_relative(a, b):
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-300)).item() for k in b)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process run on 8 molecules per step, and its initial parameters."""
    folder = tmp_path_factory.mktemp("single")
    run(["--batch-size", "8", "--save", str(folder / "trained")], 1)
    run(["--batch-size", "8", "--steps", "0", "--save", str(folder / "initial")], 1)
    return load(str(folder / "trained.rank0.pt")), load(str(folder / "initial.rank0.pt"))


@pytest.mark.parametrize("recipe", ["ddp", "allreduce"])
def test_two_ranks_equal_one_process_on_the_union(tmp_path, single, recipe):
    prefix = str(tmp_path / "params")
    log = run(["--batch-size", "4", "--recipe", recipe, "--save", prefix], 2)
    assert "5 steps on 2 process(es)" in log
    rank0, rank1 = load(prefix + ".rank0.pt"), load(prefix + ".rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "the ranks' parameters differ"
    trained, initial = single
    assert worst_relative(rank0, trained) <= 1e-10
    # Training moved the parameters: the comparison above is not of two initial states.
    assert worst_relative(initial, trained) > 1e-3
