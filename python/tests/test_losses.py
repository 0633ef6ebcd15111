"""Every loss against the plain-PyTorch formulas of ``reference.py``: values,
per-molecule values, and gradients with respect to the parameters of PyTorch
modules and to the inputs, for every gradient flow, float64 to 1e-10."""

import pytest
import torch

import physcon
import reference as ref
from conftest import assert_close, grads

FLOWS = ["to_structure", "both", "to_energy"]
RTOL64 = 1e-10


def params(*modules):
    return [p for m in modules for p in m.parameters()]


def compare(got, want, tensors, rtol, what):
    """Same value, and the same gradient with respect to every tensor."""
    assert got.shape == want.shape, what
    assert_close(got, want, rtol, f"{what} value")
    # A fixed random cotangent: a plain sum can hide errors (the forces of an
    # invariant energy sum to zero, and so does the gradient of their sum).
    v = torch.randn(want.shape, generator=torch.Generator().manual_seed(7), dtype=want.dtype)
    got_grads, want_grads = grads((got * v).sum(), tensors), grads((want * v).sum(), tensors)
    scale = max(w.abs().max().item() for w in want_grads)
    assert scale > 0, f"{what}: the reference has no gradient at all"
    for k, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert_close(g, w, rtol, f"{what} gradient of tensor {k} ({tuple(tensors[k].shape)})", scale)


@pytest.mark.parametrize("flow", FLOWS)
def test_stationarity_matches_pytorch(mol64, flow):
    m = mol64
    x_in = m.pos.clone().requires_grad_(True)
    structure = m.generator(x_in)
    loss = physcon.StationarityLoss(flow=flow)
    tensors = params(m.energy, m.generator) + [x_in]
    want = ref.stationarity_per_molecule(m.energy, m.teacher, structure, m.batch, 3, flow)
    compare(loss(m.energy, structure, m.batch), want.mean(), tensors, RTOL64, f"stationarity {flow}")
    per = loss.per_molecule(m.energy, structure, m.batch)
    compare(per.values, want, tensors, RTOL64, f"stationarity per molecule {flow}")
    compare(per.mean(), want.mean(), tensors, RTOL64, f"stationarity mean {flow}")
    # The frozen teacher really is frozen: no energy parameter moves.
    if flow == "to_structure":
        assert all(g.abs().max() == 0 for g in grads(loss(m.energy, structure, m.batch), params(m.energy)))


@pytest.mark.parametrize("flow", FLOWS)
def test_energy_descent_matches_pytorch(mol64, flow):
    m = mol64
    x_in = m.pos.clone().requires_grad_(True)
    structure = m.generator(x_in)
    loss = physcon.EnergyDescentLoss(flow=flow)
    tensors = params(m.energy, m.generator) + [x_in]
    want = ref.energy_descent_per_molecule(m.energy, m.teacher, structure, m.other, m.batch, 3, flow)
    compare(loss(m.energy, structure, m.other, m.batch), want.mean(), tensors, RTOL64, f"descent {flow}")
    per = loss.per_molecule(m.energy, structure, m.other, m.batch)
    compare(per.values, want, tensors, RTOL64, f"descent per molecule {flow}")


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("clean_has_graph", [False, True])
def test_score_consistency_with_model_forces_matches_pytorch(mol64, flow, clean_has_graph):
    m = mol64
    kt = physcon.kelvin_to_kt(300.0)
    x_t = (m.alpha[m.batch].unsqueeze(1) * m.pos + m.sigma[m.batch].unsqueeze(1) * m.eps).requires_grad_(True)
    eps_hat = m.denoiser(x_t, m.sigma[m.batch])
    # A clean structure with a graph of its own (generated) or a plain leaf.
    clean_in = m.other.clone().requires_grad_(True)
    clean = m.generator(clean_in) if clean_has_graph else clean_in
    level = physcon.NoiseLevel(m.alpha, m.sigma)
    loss = physcon.ScoreConsistency(kt, flow=flow)
    tensors = params(m.energy, m.denoiser, m.generator) + [x_t, clean_in]
    want = ref.score_per_molecule(eps_hat, m.alpha, m.sigma, kt, m.batch, 3, flow, energy=m.energy, clean=clean)
    got = loss(eps_hat, level, m.batch, energy=m.energy, clean=clean)
    compare(got, want.mean(), tensors, RTOL64, f"score {flow}")
    per = loss.per_molecule(eps_hat, level, m.batch, energy=m.energy, clean=clean)
    compare(per.values, want, tensors, RTOL64, f"score per molecule {flow}")


@pytest.mark.parametrize("flow", ["to_structure", "both"])
def test_score_consistency_with_force_labels_matches_pytorch(mol64, flow):
    m = mol64
    x_t = m.pos.clone().requires_grad_(True)
    eps_hat = m.denoiser(x_t, m.sigma[m.batch])
    level = physcon.NoiseLevel.sigma_only(m.sigma)
    loss = physcon.ScoreConsistency(0.05, flow=flow)
    ones = torch.ones_like(m.sigma)
    want = ref.score_per_molecule(eps_hat, ones, m.sigma, 0.05, m.batch, 3, flow, forces=m.forces)
    tensors = params(m.denoiser) + [x_t]
    compare(loss(eps_hat, level, m.batch, forces=m.forces), want.mean(), tensors, RTOL64, f"score labels {flow}")


def test_energy_and_forces_matches_pytorch(mol64):
    m = mol64
    pos = m.pos.clone().requires_grad_(True)
    tensors = params(m.energy) + [pos]
    e, f = physcon.energy_and_forces(m.energy, pos, m.batch, create_graph=True)
    e_ref, f_ref = ref.energy_and_forces(m.energy, pos, create_graph=True)
    compare(e, e_ref, tensors, RTOL64, "energy")
    compare(f, f_ref, tensors, RTOL64, "forces")
    # Without create_graph the forces are constants.
    _, f_const = physcon.energy_and_forces(m.energy, pos, m.batch)
    assert not f_const.requires_grad
    assert_close(f_const, f_ref, RTOL64, "forces without graph")


@pytest.mark.parametrize("metric", ["mse", "l1", "huber"])
@pytest.mark.parametrize("per_atom", [False, True])
def test_energy_loss_matches_pytorch(mol64, metric, per_atom):
    m = mol64
    pos = m.pos.clone().requires_grad_(True)
    pred = m.energy(pos)
    mask = torch.tensor([True, False, True])
    # An unlabelled molecule's target may be a NaN placeholder.
    target = torch.where(mask, m.energies, torch.full_like(m.energies, float("nan")))
    loss = physcon.EnergyLoss(metric, delta=0.3, per_atom=per_atom)
    want = ref.energy_loss_per_molecule(pred, target, m.batch, 3, metric, 0.3, per_atom, mask)
    tensors = params(m.energy) + [pos]
    compare(loss(pred, target, m.batch, mask), ref.masked_mean(want, mask), tensors, RTOL64, metric)
    per = loss.per_molecule(pred, target, m.batch, mask=mask)
    compare(per.values, want, tensors, RTOL64, f"{metric} per molecule")
    assert torch.equal(per.mask, mask)
    w = torch.tensor([0.5, 7.0, 2.0], dtype=torch.float64)
    wm = (w * mask * want).sum() / (w * mask).sum()
    compare(per.weighted_mean(w), wm, tensors, RTOL64, f"{metric} weighted mean")


def test_force_loss_matches_pytorch(mol64):
    m = mol64
    pos = m.pos.clone().requires_grad_(True)
    _, forces = physcon.energy_and_forces(m.energy, pos, m.batch, create_graph=True)
    mask = torch.tensor([True, True, False])
    target = m.forces.clone()
    target[m.batch == 2] = float("nan")
    want = ref.force_loss_per_molecule(forces, target, m.batch, 3, mask)
    tensors = params(m.energy) + [pos]
    compare(physcon.ForceLoss()(forces, target, m.batch, mask), ref.masked_mean(want, mask), tensors, RTOL64, "force")


def test_denoising_loss_matches_pytorch(mol64):
    m = mol64
    x_t = m.pos.clone().requires_grad_(True)
    eps_hat = m.denoiser(x_t, m.sigma[m.batch])
    want = ref.denoising_per_molecule(eps_hat, m.eps, m.batch, 3)
    tensors = params(m.denoiser) + [x_t]
    compare(physcon.DenoisingLoss()(eps_hat, m.eps, m.batch), want.mean(), tensors, RTOL64, "denoising")


def test_metrics_match_pytorch(mol64):
    m = mol64
    pred = m.other.clone().requires_grad_(True)
    compare(physcon.kabsch_rmsd(pred, m.pos, m.batch), ref.kabsch_rmsd(pred, m.pos, m.batch, 3), [pred], 1e-9, "rmsd")
    gap = physcon.energy_gap(m.energy, m.other, m.pos, m.batch)
    assert not gap.requires_grad
    with torch.no_grad():
        assert_close(gap, m.energy(m.other) - m.energy(m.pos), RTOL64, "energy gap")
    mae = physcon.energy_mae(m.energies, torch.zeros(3, dtype=torch.float64), m.batch)
    assert_close(mae, m.energies.abs().mean(), RTOL64, "energy mae")


def test_float32_follows_the_inputs(mol32):
    m = mol32
    x_in = m.pos.clone().requires_grad_(True)
    structure = m.generator(x_in)
    tensors = params(m.energy, m.generator) + [x_in]
    got = physcon.StationarityLoss(flow="both")(m.energy, structure, m.batch)
    assert got.dtype == torch.float32
    want = ref.stationarity_per_molecule(m.energy, m.teacher, structure, m.batch, 3, "both").mean()
    compare(got, want, tensors, 1e-4, "stationarity float32")
    level = physcon.NoiseLevel(m.alpha, m.sigma)
    eps_hat = m.denoiser(m.pos, m.sigma[m.batch])
    got = physcon.ScoreConsistency(0.1, flow="both")(eps_hat, level, m.batch, energy=m.energy, clean=m.other)
    want = ref.score_per_molecule(eps_hat, m.alpha, m.sigma, 0.1, m.batch, 3, "both", energy=m.energy, clean=m.other)
    compare(got, want.mean(), params(m.energy, m.denoiser), 1e-4, "score float32")


def test_batch_object_equals_the_tensor(mol64):
    m = mol64
    b = physcon.Batch(m.batch)
    assert (b.num_molecules, b.num_atoms, len(b)) == (3, 9, 3)
    assert b.counts.tolist() == [2, 4, 3]
    assert repr(b) == "Batch(num_molecules=3, num_atoms=9, device=cpu)"
    loss = physcon.StationarityLoss()
    assert loss(m.energy, m.pos, b).item() == loss(m.energy, m.pos, m.batch).item()


def test_no_grad_computes_values_without_graph(mol64):
    m = mol64
    structure = m.generator(m.pos.clone().requires_grad_(True))
    with_grad = physcon.StationarityLoss(flow="both")(m.energy, structure, m.batch)
    with torch.no_grad():
        structure = m.generator(m.pos)
        value = physcon.StationarityLoss(flow="both")(m.energy, structure, m.batch)
        per = physcon.StationarityLoss().per_molecule(m.energy, structure, m.batch)
        e, f = physcon.energy_and_forces(m.energy, structure, m.batch)
        # physcon's own switch to grad mode for the derivatives did not leak out.
        assert not torch.is_grad_enabled()
    assert not value.requires_grad and not per.values.requires_grad and not f.requires_grad
    assert_close(value, with_grad, RTOL64, "value under no_grad")
    assert_close(per.mean(), with_grad, RTOL64, "per-molecule mean under no_grad")
    assert torch.is_grad_enabled()


def test_settings_repr_and_flow_names():
    assert repr(physcon.StationarityLoss()) == "StationarityLoss(flow=GradientFlow.TO_STRUCTURE, checks='full')"
    assert physcon.StationarityLoss(flow="both").flow == physcon.GradientFlow.BOTH
    assert physcon.EnergyDescentLoss(flow=physcon.GradientFlow.TO_ENERGY).flow == physcon.GradientFlow.TO_ENERGY
    assert (
        repr(physcon.ScoreConsistency(0.025, flow="to_energy", checks="metadata"))
        == "ScoreConsistency(kt=0.025, flow=GradientFlow.TO_ENERGY, checks='metadata')"
    )
    assert repr(physcon.EnergyLoss("huber", delta=0.5, per_atom=True)) == (
        "EnergyLoss(metric='huber', delta=0.5, per_atom=True, checks='full')"
    )
    assert repr(physcon.ForceLoss()) == "ForceLoss(checks='full')"
    assert repr(physcon.DenoisingLoss(checks="metadata")) == "DenoisingLoss(checks='metadata')"
    assert repr(physcon.GradientFlow.BOTH) == "GradientFlow.BOTH"
    assert abs(physcon.kelvin_to_kt(300.0) - 300.0 * physcon.KB_EV_PER_K) < 1e-15


def test_docstrings_carry_the_library_formulas():
    assert "L = mean_b (1/n_b) sum_{i in b} || dE(R_hat)/dR_hat_i ||^2" in physcon.StationarityLoss.__doc__
    assert "eps* = -(s/a) F(R)/kT" in physcon.ScoreConsistency.__doc__
    assert "eV²/Å²" in physcon.ForceLoss.__doc__
    # Every public object says what it is, in Python's words (no Rust).
    for name in physcon.__all__:
        obj = getattr(physcon, name)
        if callable(obj):
            assert obj.__doc__ and "fn main" not in obj.__doc__ and "::" not in obj.__doc__, name
    assert "`NoiseLevel(a, s)`" in physcon.ScoreConsistency.__doc__
    assert "`TO_STRUCTURE` (default)" in physcon.ScoreConsistency.__doc__
