"""The README's Python training step runs as written (with a toy model) and trains."""

import os
import re

import torch

from conftest import Denoiser, EnergyNet

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def training_step_code():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## From Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class Model(torch.nn.Module):
    """The README's `model`: `.energy(pos, species, batch)` and `.noise(x_t, sigma, species, batch)`."""

    def __init__(self, species, batch):
        super().__init__()
        self.energy_net = EnergyNet(species, batch, int(batch.max()) + 1).double()
        self.denoiser = Denoiser().double()

    def energy(self, pos, species, batch):
        return self.energy_net(pos)

    def noise(self, x_t, sigma_atoms, species, batch):
        return self.denoiser(x_t, sigma_atoms)


def test_the_readme_training_step_runs(mol64):
    m = mol64
    torch.manual_seed(0)
    model = Model(m.species, m.batch)
    before = [p.detach().clone() for p in model.parameters()]
    scope = {
        "model": model,
        "pos": m.pos,
        "species": m.species,
        "batch": m.batch,
        "e_ref": m.energies,
        "f_ref": m.forces,
        "optimiser": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
    exec(compile(training_step_code(), "README.md", "exec"), scope)
    assert torch.isfinite(scope["loss"])
    moved = [not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters())]
    assert all(moved), "a parameter got no update"
