"""The losses are PyTorch citizens: ``nn.Module``s with their settings in
``repr``, and every public object pickles and deep-copies, so a loss lives in
an ``nn.ModuleDict``, inside a module that is deep-copied, saved whole,
averaged (``AveragedModel``) or sent to spawned processes, and a ``Batch``
crosses DataLoader workers. dtype follows the inputs (bfloat16 included); the
energy, force and denoising losses run inside ``torch.compile(fullgraph=True)``."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import physcon
from conftest import assert_close

LOSSES = [
    physcon.EnergyLoss("huber", delta=0.5, per_atom=True),
    physcon.ForceLoss(checks="metadata"),
    physcon.DenoisingLoss(),
    physcon.StationarityLoss(flow="both"),
    physcon.EnergyDescentLoss(flow=physcon.GradientFlow.TO_ENERGY),
    physcon.ScoreConsistency(0.0259, flow="to_structure"),
]


def roundtrip(obj):
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: type(loss).__name__)
def test_every_loss_is_a_module_that_pickles_and_deep_copies(loss):
    assert isinstance(loss, nn.Module)
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    for copied in [roundtrip(loss), copy.deepcopy(loss)]:
        assert type(copied) is type(loss) and repr(copied) == repr(loss)
    buffer = io.BytesIO()
    torch.save(loss, buffer)
    buffer.seek(0)
    assert repr(torch.load(buffer, weights_only=False)) == repr(loss)


def test_settings_are_validated_and_shown():
    assert repr(physcon.EnergyLoss("huber", delta=0.5, per_atom=True)) == (
        "EnergyLoss(metric='huber', delta=0.5, per_atom=True, checks='full')"
    )
    assert repr(physcon.StationarityLoss()) == "StationarityLoss(flow=GradientFlow.TO_STRUCTURE, checks='full')"
    with pytest.raises(ValueError, match="`flow`"):
        physcon.ScoreConsistency(0.1, flow=3)
    assert physcon.GradientFlow.of("BOTH") is physcon.GradientFlow.BOTH
    assert int(physcon.GradientFlow.TO_ENERGY) == 2


def test_every_public_value_object_pickles(mol64):
    m = mol64
    b = physcon.Batch(m.batch)
    level = physcon.NoiseLevel(m.alpha, m.sigma)
    schedule = physcon.NoiseSchedule("linear", 20, beta_start=1e-3, beta_end=0.05)
    noised = physcon.q_sample(schedule, m.pos, torch.tensor([1, 2, 3]), b, eps=m.eps)
    per = physcon.EnergyLoss().per_molecule(m.energies, m.energies * 2, b, torch.tensor([True, False, True]))
    for obj in [b, level, schedule, noised, per, physcon.GradientFlow.BOTH]:
        for copied in [roundtrip(obj), copy.deepcopy(obj)]:
            assert repr(copied) == repr(obj)
    assert torch.equal(roundtrip(b).counts, b.counts) and roundtrip(b).num_molecules == 3
    assert torch.equal(roundtrip(level).sigma, level.sigma)
    assert roundtrip(schedule) == schedule and roundtrip(schedule).alpha_bar(20) == schedule.alpha_bar(20)
    assert torch.equal(roundtrip(noised).x_t, noised.x_t) and torch.equal(roundtrip(noised).level.t, noised.level.t)
    assert torch.equal(roundtrip(per).values, per.values) and torch.equal(roundtrip(per).mask, per.mask)
    # A copied batch computes as the original.
    assert physcon.DenoisingLoss()(m.eps, m.pos, roundtrip(b)).item() == physcon.DenoisingLoss()(m.eps, m.pos, b).item()


class Trainer(nn.Module):
    """A user's training module holding its model and the losses in a ModuleDict."""

    def __init__(self, energy):
        super().__init__()
        self.energy = energy
        self.losses = nn.ModuleDict(
            {
                "optimality": physcon.StationarityLoss(),
                "score": physcon.ScoreConsistency(physcon.kelvin_to_kt(300.0)),
                "forces": physcon.ForceLoss(),
            }
        )

    def forward(self, pos, batch, forces):
        e, f = physcon.energy_and_forces(self.energy, pos, batch, create_graph=True)
        structure = pos + 0.05 * torch.tanh(pos)
        return self.losses["forces"](f, forces, batch) + self.losses["optimality"](self.energy, structure, batch)


def test_a_trainer_with_losses_copies_saves_and_averages(mol64):
    m = mol64
    trainer = Trainer(m.energy)
    assert "StationarityLoss(flow=GradientFlow.TO_STRUCTURE, checks='full')" in repr(trainer)
    want = trainer(m.pos, m.batch, m.forces)
    clone = copy.deepcopy(trainer)
    assert_close(clone(m.pos, m.batch, m.forces), want, 1e-14, "deep copy")
    buffer = io.BytesIO()
    torch.save(trainer, buffer)
    buffer.seek(0)
    assert_close(torch.load(buffer, weights_only=False)(m.pos, m.batch, m.forces), want, 1e-14, "saved whole")
    averaged = torch.optim.swa_utils.AveragedModel(trainer)
    averaged.update_parameters(trainer)
    assert_close(averaged(m.pos, m.batch, m.forces), want, 1e-12, "AveragedModel")
    assert isinstance(averaged.module.losses["score"], physcon.ScoreConsistency)


def _well(batch):
    """A harmonic well per molecule, ``E_b = sum_{i in b} |r_i|^2`` (picklable by name)."""
    return lambda x: torch.zeros(3, dtype=x.dtype).index_add(0, batch, (x * x).sum(dim=1))


def _spawned(rank, loss, pos, batch, queue):
    queue.put(loss(_well(batch), pos, batch).item())


def test_a_loss_goes_to_spawned_processes(mol64):
    m = mol64
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.SimpleQueue()
    loss = physcon.StationarityLoss(flow="both")
    torch.multiprocessing.spawn(_spawned, args=(loss, m.pos, m.batch, queue), nprocs=1, join=True)
    assert queue.get() == pytest.approx(loss(_well(m.batch), m.pos, m.batch).item(), rel=1e-14)


class Molecules(torch.utils.data.Dataset):
    """Each item a small batch of its own: positions and a physcon.Batch built in the worker."""

    def __len__(self):
        return 4

    def __getitem__(self, k):
        batch = torch.tensor([0, 0, 1, 1, 1][: 3 + k % 3])
        return torch.full((len(batch), 3), float(k)), physcon.Batch(batch)


def test_a_batch_crosses_dataloader_workers():
    loader = torch.utils.data.DataLoader(
        Molecules(), batch_size=None, num_workers=2, multiprocessing_context="spawn", timeout=120
    )
    seen = list(loader)
    assert len(seen) == 4
    for k, (pos, b) in enumerate(seen):
        assert isinstance(b, physcon.Batch) and b.num_atoms == pos.shape[0]
        assert physcon.DenoisingLoss()(pos, torch.zeros_like(pos), b).item() == pytest.approx(3 * k * k)


def test_bfloat16_follows_the_inputs(mol64):
    m = mol64
    eps_hat, eps = m.eps.to(torch.bfloat16), m.pos.to(torch.bfloat16)
    loss = physcon.DenoisingLoss()(eps_hat, eps, m.batch)
    assert loss.dtype == torch.bfloat16
    assert_close(loss.double(), physcon.DenoisingLoss()(m.eps, m.pos, m.batch), 2e-2, "bfloat16 denoising")
    f = physcon.ForceLoss()(eps_hat, eps, m.batch, torch.tensor([True, False, True]))
    assert f.dtype == torch.bfloat16 and torch.isfinite(f)
    level = physcon.NoiseLevel(m.alpha.to(torch.bfloat16), m.sigma.to(torch.bfloat16))
    s = physcon.ScoreConsistency(0.1)(eps_hat, level, m.batch, forces=eps)
    assert s.dtype == torch.bfloat16 and torch.isfinite(s)
    assert physcon.kabsch_rmsd(eps, eps_hat, m.batch).dtype == torch.bfloat16


def test_supervised_losses_compile_with_fullgraph(mol32):
    m = mol32
    b = physcon.Batch(m.batch)  # validated outside: the compiled function reads no host value
    energy_loss, force_loss, denoising = physcon.EnergyLoss(per_atom=True), physcon.ForceLoss(), physcon.DenoisingLoss()
    mask = torch.tensor([True, False, True])

    def terms(e, e_ref, f, f_ref, eps_hat, eps):
        return energy_loss(e, e_ref, b, mask) + 10 * force_loss(f, f_ref, b, mask) + denoising(eps_hat, eps, b)

    compiled = torch.compile(terms, fullgraph=True, backend="aot_eager")
    e = m.energies.clone().requires_grad_(True)
    args = (e, m.energies * 0.5, m.forces, m.other, m.eps, m.pos)
    want = terms(*args)
    got = compiled(*args)
    assert_close(got, want, 1e-6, "compiled loss")
    (g,) = torch.autograd.grad(got, e)
    (g_want,) = torch.autograd.grad(want, e)
    assert_close(g, g_want, 1e-6, "compiled gradient")


def test_the_readme_compile_pattern_runs(mol32):
    """Compile the noise model, keep the energy model eager: the consistency losses
    differentiate the energy twice, which torch.compile's autograd does not support."""
    m = mol32
    b = physcon.Batch(m.batch)
    denoiser = torch.compile(m.denoiser, backend="aot_eager")
    score = physcon.ScoreConsistency(0.1)
    optimality = physcon.StationarityLoss()
    x_t = m.alpha[m.batch, None] * m.pos + m.sigma[m.batch, None] * m.eps
    level = physcon.NoiseLevel(m.alpha, m.sigma)

    def step(noise_model):
        eps_hat = noise_model(x_t, m.sigma[m.batch])
        x0_hat = (x_t - m.sigma[m.batch, None] * eps_hat) / m.alpha[m.batch, None]
        loss = score(eps_hat, level, b, energy=m.energy, clean=m.pos) + optimality(m.energy, x0_hat, b)
        return loss, torch.autograd.grad(loss, list(m.denoiser.parameters()))

    got, got_grads = step(denoiser)
    want, want_grads = step(m.denoiser)
    assert_close(got, want, 1e-5, "compiled step")
    for g, w in zip(got_grads, want_grads):
        assert_close(g, w, 1e-4, "compiled step gradient")
