"""check_energy_model on PyTorch models: a sound model passes, a model that
depends on absolute position fails the translation check."""

import pytest
import torch

import physcon
from conftest import EnergyNet


def model_of(net_factory):
    """A model as check_energy_model calls it: ``model(pos, species, batch) -> [B]``
    (the batch is re-ordered between calls, so the net is rebuilt per batch)."""
    torch.manual_seed(3)
    template = net_factory(torch.tensor([1]), torch.tensor([0]), 1)

    def model(pos, species, batch):
        net = net_factory(species, batch, int(batch.max()) + 1)
        # The same weights; the buffers (pairs, species, batch) are the new batch's.
        net.load_state_dict(dict(template.named_parameters()), strict=False)
        return net.to(pos.dtype)(pos)

    return model


def test_a_sound_model_passes(mol64):
    m = mol64
    report = physcon.check_energy_model(model_of(EnergyNet), m.pos, m.species, m.batch)
    assert report.passed, str(report)
    assert report.ensure() is report
    assert report.failed == []
    assert {f[0] for f in report.findings} >= {"rotation", "translation", "forces"}


def test_a_model_that_sees_absolute_positions_fails(mol64):
    class Shifted(EnergyNet):
        def forward(self, pos):
            return super().forward(pos) + self.species.new_zeros(self.num_molecules, dtype=pos.dtype).index_add(
                0, self.batch, pos[:, 0]
            )

    m = mol64
    report = physcon.check_energy_model(model_of(Shifted), m.pos, m.species, m.batch)
    assert not report.passed
    assert "translation" in report.failed
    with pytest.raises(ValueError, match="failed the model check: .*translation"):
        report.ensure()


def test_float32_is_refused(mol32):
    m = mol32
    with pytest.raises(TypeError, match="`batch pos`"):
        physcon.check_energy_model(model_of(EnergyNet), m.pos, m.species, m.batch)
