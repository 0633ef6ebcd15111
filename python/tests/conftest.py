"""Shared fixtures: a small ragged batch and PyTorch models with a few SiLU layers."""

import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))

import reference as ref  # noqa: E402

# The tests compare float64 results to 1e-10: one thread keeps reductions in one order.
torch.set_num_threads(1)


class EnergyNet(nn.Module):
    """A small invariant energy: ``E_b = sum_{i in b} MLP([embed(z_i), sum_j rbf(r_ij)])``.

    Smooth (SiLU, Gaussian radial basis) so that its Hessian exists, as the
    stationarity loss needs; distances only between distinct atoms of one
    molecule, so no norm of a zero vector is taken.
    """

    def __init__(self, species, batch, num_molecules, hidden=16, basis=8):
        super().__init__()
        same = batch.unsqueeze(0) == batch.unsqueeze(1)
        distinct = ~torch.eye(len(batch), dtype=torch.bool)
        i, j = torch.nonzero(same & distinct, as_tuple=True)
        self.register_buffer("i", i)
        self.register_buffer("j", j)
        self.register_buffer("species", species)
        self.register_buffer("batch", batch)
        self.register_buffer("centres", torch.linspace(0.5, 4.0, basis))
        self.num_molecules = num_molecules
        self.embed = nn.Embedding(10, 4)
        self.mlp = nn.Sequential(
            nn.Linear(4 + basis, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1)
        )

    def forward(self, pos):
        d = pos[self.j] - pos[self.i]
        r = (d * d).sum(dim=1).sqrt()
        rbf = torch.exp(-((r.unsqueeze(1) - self.centres) ** 2))
        env = pos.new_zeros(pos.shape[0], rbf.shape[1]).index_add(0, self.i, rbf)
        h = torch.cat([self.embed(self.species).to(pos.dtype), env], dim=1)
        e_atom = self.mlp(h).squeeze(1)
        return pos.new_zeros(self.num_molecules).index_add(0, self.batch, e_atom)


class Generator(nn.Module):
    """A structure model: ``R_hat = x + 0.1 MLP(x)`` per atom."""

    def __init__(self, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, 3))

    def forward(self, x):
        return x + 0.1 * self.net(x)


class Denoiser(nn.Module):
    """A noise predictor: ``eps_hat = MLP([x_t, sigma of the atom's molecule])``."""

    def __init__(self, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.SiLU(), nn.Linear(hidden, 3))

    def forward(self, x_t, sigma_atoms):
        return self.net(torch.cat([x_t, sigma_atoms.unsqueeze(1)], dim=1))


class Molecules:
    """Three molecules of 2, 4 and 3 atoms, interleaved in the batch."""

    def __init__(self, dtype, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.batch = torch.tensor([0, 1, 2, 1, 0, 2, 1, 1, 2])
        self.num_molecules = 3
        self.species = torch.tensor([1, 6, 8, 1, 1, 7, 6, 1, 1])
        n = len(self.batch)
        self.pos = (1.3 * torch.randn(n, 3, generator=g)).to(dtype)
        self.other = (self.pos + 0.2 * torch.randn(n, 3, generator=g).to(dtype)).detach()
        self.forces = torch.randn(n, 3, generator=g).to(dtype)
        self.eps = torch.randn(n, 3, generator=g).to(dtype)
        self.energies = torch.randn(3, generator=g).to(dtype)
        self.alpha = torch.tensor([0.999, 0.99, 0.98], dtype=dtype)
        self.sigma = (1 - self.alpha**2).sqrt()
        torch.manual_seed(seed)
        self.energy = EnergyNet(self.species, self.batch, self.num_molecules).to(dtype)
        self.teacher = ref.frozen(self.energy)
        self.generator = Generator().to(dtype)
        self.denoiser = Denoiser().to(dtype)


@pytest.fixture
def mol64():
    return Molecules(torch.float64)


@pytest.fixture
def mol32():
    return Molecules(torch.float32)


def grads(loss, tensors):
    """``d loss / d tensors``, zeros where the loss does not depend on a tensor."""
    got = torch.autograd.grad(loss, tensors, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, got)]


def assert_close(got, want, rtol, what, scale=None):
    """``|got - want| <= rtol * scale`` elementwise, ``scale`` the largest ``|want|`` unless given.

    Gradients are compared on the scale of the whole gradient (every tensor
    of one loss): a gradient that is zero in exact arithmetic (the bias of a
    layer whose output only matters up to a translation) is round-off, 1e-20
    against an O(1) gradient, not a relative error of 100%.
    """
    if scale is None:
        scale = want.detach().abs().max().item() if want.numel() else 0.0
    err = (got.detach() - want.detach()).abs().max().item() if want.numel() else 0.0
    assert err <= rtol * max(scale, 1e-300), f"{what}: max error {err:.3e} against scale {scale:.3e}"
