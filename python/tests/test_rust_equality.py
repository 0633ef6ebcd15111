"""The pure-PyTorch package equals the Rust crate, its reference implementation.

``examples/python_crosscheck.rs`` computes every loss, flow, per-molecule
reduction and helper of the Rust crate on fixed inputs with three small
models (energy, structure generator, noise predictor) and writes the values
and the gradients (of ``sum(value * cot)`` with respect to every parameter,
the structure, the noised structure and the clean structure) to an ``.npz``.
This test builds the same models from the same parameters in PyTorch,
recomputes every quantity with ``physcon``, and holds values and gradients
equal to 1e-10 relative (float64).

``scripts/test.sh`` regenerates the file on every run and points
``PHYSCON_CROSSCHECK`` at it; without the variable the test is skipped (a
plain ``pytest`` without the Rust toolchain), with it a missing file fails.
"""

import os

import pytest
import torch
import torch.nn.functional as F

import physcon

PATH = os.environ.get("PHYSCON_CROSSCHECK")
RTOL = 1e-10
FLOWS = ["to_structure", "both", "to_energy"]
PARAMS = ["w1", "b1", "w2", "e0", "g1", "gb", "g2", "d1", "db", "d2"]


@pytest.fixture(scope="module")
def rust():
    if not PATH:
        pytest.skip("PHYSCON_CROSSCHECK is not set (scripts/test.sh sets it after running the Rust crosscheck)")
    np = pytest.importorskip("numpy")
    assert os.path.exists(PATH), f"PHYSCON_CROSSCHECK={PATH} does not exist: run the Rust crosscheck first"
    with np.load(PATH) as f:
        return {k: torch.from_numpy(f[k].copy()) for k in f.files}


class Models:
    """The crosscheck's three models, from the Rust file's parameters (formulas as in the Rust program)."""

    def __init__(self, d):
        self.p = {k: d[f"param.{k}"].clone().requires_grad_(True) for k in PARAMS}
        self.batch, self.species = d["input.batch"], d["input.species"]
        self.i, self.j, self.centres = d["input.pairs_i"], d["input.pairs_j"], d["input.centres"]
        self.x_in = d["input.pos"].clone().requires_grad_(True)
        self.x_t = d["input.x_t"].clone().requires_grad_(True)
        self.clean_in = d["input.other"].clone().requires_grad_(True)
        self.wrt = dict(self.p, x_in=self.x_in, x_t=self.x_t, clean_in=self.clean_in)

    def energy(self, pos):
        p = self.p
        d = pos[self.j] - pos[self.i]
        r = d.square().sum(dim=1).sqrt()
        rbf = (r.unsqueeze(1) - self.centres).square().neg().exp()
        phi = F.silu(rbf @ p["w1"] + p["b1"]) @ p["w2"]
        e_atom = pos.new_zeros(pos.shape[0]).index_add(0, self.i, phi) + p["e0"][self.species]
        return pos.new_zeros(3).index_add(0, self.batch, e_atom)

    def generate(self, x):
        p = self.p
        return x + F.silu(x @ p["g1"] + p["gb"]) @ p["g2"] * 0.1

    def denoise(self, x_t, sigma_atoms):
        p = self.p
        return F.silu(torch.cat([x_t, sigma_atoms.unsqueeze(1)], dim=1) @ p["d1"] + p["db"]) @ p["d2"]


def python_side(d):
    """Every quantity of the Rust program, computed with the Python package: ``{name: tensor}``
    for the differentiated quantities, and ``{name: tensor}`` for the plain arrays."""
    m = Models(d)
    q, plain = {}, {}
    b = physcon.Batch(m.batch)
    pos, other = d["input.pos"], d["input.other"]
    alpha, sigma, eps = d["input.alpha"], d["input.sigma"], d["input.eps"]
    labels, energies = d["input.forces"], d["input.energies"]

    def per_molecule(name, per):
        q[f"{name}.per_molecule"] = per.values
        q[f"{name}.mean"] = per.mean()

    for flow in FLOWS:
        structure = m.generate(m.x_in)
        loss = physcon.StationarityLoss(flow=flow)
        q[f"stationarity.{flow}.forward"] = loss(m.energy, structure, b)
        per_molecule(f"stationarity.{flow}", loss.per_molecule(m.energy, structure, b))
        descent = physcon.EnergyDescentLoss(flow=flow)
        q[f"descent.{flow}.forward"] = descent(m.energy, structure, other, b)
        per_molecule(f"descent.{flow}", descent.per_molecule(m.energy, structure, other, b))

    kt = physcon.kelvin_to_kt(300.0)
    level = physcon.NoiseLevel(alpha, sigma)
    for flow in FLOWS:
        for generated in (False, True):
            eps_hat = m.denoise(m.x_t, sigma[m.batch])
            clean = m.generate(m.clean_in) if generated else m.clean_in
            loss = physcon.ScoreConsistency(kt, flow=flow)
            name = f"score.model.{flow}.{'generated' if generated else 'leaf'}"
            q[f"{name}.forward"] = loss(eps_hat, level, b, energy=m.energy, clean=clean)
            per_molecule(name, loss.per_molecule(eps_hat, level, b, energy=m.energy, clean=clean))
    sigma_only = physcon.NoiseLevel.sigma_only(sigma)
    for flow in FLOWS[:2]:
        eps_hat = m.denoise(m.x_t, sigma[m.batch])
        per_molecule(
            f"score.labels.{flow}",
            physcon.ScoreConsistency(0.05, flow=flow).per_molecule(eps_hat, sigma_only, b, forces=labels),
        )
    q["score_target"] = physcon.score_target(labels, level, kt, b)

    e, f = physcon.energy_and_forces(m.energy, m.x_in, b, create_graph=True)
    q["energy_and_forces.graph.energy"], q["energy_and_forces.graph.forces"] = e, f
    e, f = physcon.energy_and_forces(m.energy, m.x_in, b)
    q["energy_and_forces.constant.energy"], q["energy_and_forces.constant.forces"] = e, f

    mask = torch.tensor([True, False, True])
    target = torch.where(mask, energies, torch.full_like(energies, float("nan")))
    weights = torch.tensor([0.5, 7.0, 2.0], dtype=torch.float64)
    for metric in ["mse", "l1", "huber"]:
        for per_atom in [False, True]:
            pred = m.energy(m.x_in)
            loss = physcon.EnergyLoss(metric, delta=0.3, per_atom=per_atom)
            name = f"energy_loss.{metric}.{'per_atom' if per_atom else 'total'}"
            q[f"{name}.forward"] = loss(pred, target, b, mask)
            per = loss.per_molecule(pred, target, b, mask)
            per_molecule(name, per)
            q[f"{name}.weighted_mean"] = per.weighted_mean(weights)
            unmasked = loss.per_molecule(pred, energies, b)
            per_molecule(f"{name}.unmasked", unmasked)
            q[f"{name}.unmasked.weighted_mean"] = unmasked.weighted_mean(weights)
    force_mask = torch.tensor([True, True, False])
    force_target = torch.where(force_mask[m.batch].unsqueeze(1), labels, torch.full_like(labels, float("nan")))
    predicted = physcon.energy_and_forces(m.energy, m.x_in, b, create_graph=True)[1]
    force_loss = physcon.ForceLoss()
    q["force_loss.masked.forward"] = force_loss(predicted, force_target, b, force_mask)
    per_molecule("force_loss.masked", force_loss.per_molecule(predicted, force_target, b, force_mask))
    per_molecule("force_loss.unmasked", force_loss.per_molecule(predicted, labels, b))
    eps_hat = m.denoise(m.x_t, sigma[m.batch])
    q["denoising.forward"] = physcon.DenoisingLoss()(eps_hat, eps, b)
    per_molecule("denoising", physcon.DenoisingLoss().per_molecule(eps_hat, eps, b))

    q["kabsch_rmsd"] = physcon.kabsch_rmsd(m.generate(m.x_in), pos, b)
    q["kabsch_rmsd.identical"] = physcon.kabsch_rmsd(m.x_in, pos, b)
    q["energy_gap"] = physcon.energy_gap(m.energy, other, pos, b)
    q["energy_mae.masked"] = physcon.energy_mae(m.energy(m.x_in), target, b, mask)

    for kind, schedule in [
        ("cosine", physcon.NoiseSchedule("cosine", 50)),
        ("linear", physcon.NoiseSchedule("linear", 50, beta_start=1e-4, beta_end=0.02)),
    ]:
        plain[f"schedule.{kind}.alpha_bar"] = torch.tensor(
            [schedule.alpha_bar(t) for t in range(51)], dtype=torch.float64
        )
        t = torch.tensor([1, 7, 50])
        lv = schedule.level(t, torch.float64)
        plain[f"schedule.{kind}.level.alpha"], plain[f"schedule.{kind}.level.sigma"] = lv.alpha, lv.sigma
        noised = physcon.q_sample(schedule, m.x_in, t, b, eps=eps)
        q[f"q_sample.{kind}.x_t"], q[f"q_sample.{kind}.x0"] = noised.x_t, noised.x0
        plain[f"q_sample.{kind}.eps"] = noised.eps
    plain["kelvin_to_kt.300"] = torch.tensor(kt, dtype=torch.float64)
    return m, q, plain


def close(got, want):
    """The largest error relative to the largest magnitude of ``want`` (exact match needed where it is all zero)."""
    if got.shape != want.shape:
        return float("inf")
    if want.numel() == 0:
        return 0.0
    err = (got.detach() - want).abs().max().item()
    scale = want.abs().max().item()
    return err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))


def test_every_quantity_equals_the_rust_crate(rust):
    m, q, plain = python_side(rust)
    rust_quantities = {k[: -len(".value")] for k in rust if k.endswith(".value")}
    assert set(q) == rust_quantities, (
        f"only in Python: {sorted(set(q) - rust_quantities)}; only in Rust: {sorted(rust_quantities - set(q))}"
    )
    rust_plain = {
        k
        for k in rust
        if k.split(".")[0] in {"schedule", "kelvin_to_kt"} or (k.startswith("q_sample.") and k.endswith(".eps"))
    }
    assert set(plain) == rust_plain
    failures, compared = [], 0
    for name, value in q.items():
        compared += 1
        if close(value, rust[f"{name}.value"]) > RTOL:
            failures.append(f"{name}: value off by {close(value, rust[f'{name}.value']):.2e}")
        tensors = list(m.wrt.values())
        want = {k: rust[f"{name}.grad.{k}"] for k in m.wrt}
        if value.requires_grad:
            cot = rust[f"{name}.cot"]
            got = torch.autograd.grad((value * cot).sum(), tensors, allow_unused=True, retain_graph=True)
        else:
            got = [None] * len(tensors)
        scale = max(w.abs().max().item() for w in want.values())
        for (k, t), g in zip(m.wrt.items(), got):
            g = torch.zeros_like(t) if g is None else g
            compared += 1
            err = (g - want[k]).abs().max().item()
            if err > RTOL * scale or (scale == 0 and err > 0):
                failures.append(f"{name}: gradient to {k} off by {err:.2e} (scale {scale:.2e})")
    for name, value in plain.items():
        compared += 1
        if close(value, rust[name]) > RTOL:
            failures.append(f"{name}: off by {close(value, rust[name]):.2e}")
    print(f"{compared} values and gradients equal to the Rust crate's ({len(q)} quantities)")
    assert not failures, "\n".join(failures)
    assert compared > 1400
