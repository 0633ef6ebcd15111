"""physcon's losses written again in plain PyTorch, from the documented formulas
(the Rust docs and docs/DESIGN.md), never by calling physcon: the tests hold
the package to these.

Conventions: ragged batches ``pos [N, 3]``, ``batch [N]`` (int64, molecule of
each atom), molecule values ``[B]``; every loss is a mean over each
molecule's atoms first, then over molecules.

Gradient flows of the consistency losses, as documented:

- ``both``: plain create-graph autograd into everything that took part;
- ``to_energy``: the structure (and the noise prediction) are constants;
- ``to_structure``: the energy model is a frozen teacher. The reference
  evaluates a deep copy of the energy model whose parameters do not require
  grad, which is what "no energy parameter receives gradient, the structure
  gets dL/dR" means; physcon gets there another way (a surrogate).
"""

import copy

import torch


def segment_sum(values, batch, num_molecules):
    """Per-molecule sum ``[N, ...] -> [B, ...]``."""
    out = values.new_zeros((num_molecules,) + tuple(values.shape[1:]))
    return out.index_add(0, batch, values)


def counts(batch, num_molecules, dtype):
    return torch.bincount(batch, minlength=num_molecules).to(dtype)


def segment_mean(values, batch, num_molecules):
    n = counts(batch, num_molecules, values.dtype)
    return segment_sum(values, batch, num_molecules) / n.reshape((-1,) + (1,) * (values.dim() - 1))


def centre(x, batch, num_molecules):
    """Removes each molecule's centroid from ``[N, 3]`` coordinates."""
    return x - segment_mean(x, batch, num_molecules)[batch]


def masked_mean(values, mask):
    """``sum_b m_b l_b / max(sum_b m_b, 1)``, unlabelled values zeroed first."""
    if mask is None:
        return values.mean()
    values = torch.where(mask, values, torch.zeros_like(values))
    return values.sum() / mask.to(values.dtype).sum().clamp_min(1.0)


def frozen(model):
    """A deep copy of an ``nn.Module`` energy whose parameters need no grad."""
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def energy_loss_per_molecule(pred, target, batch, num_molecules, metric="mse", delta=1.0, per_atom=False, mask=None):
    target = target.detach()
    if mask is not None:
        target = torch.where(mask, target, torch.zeros_like(target))
    err = pred - target
    if per_atom:
        err = err / counts(batch, num_molecules, pred.dtype)
    if metric == "mse":
        values = err**2
    elif metric == "l1":
        values = err.abs()
    else:
        values = torch.where(err.abs() <= delta, 0.5 * err**2, delta * (err.abs() - 0.5 * delta))
    if mask is not None:
        values = torch.where(mask, values, torch.zeros_like(values))
    return values


def force_loss_per_molecule(pred, target, batch, num_molecules, mask=None):
    target = target.detach()
    if mask is not None:
        target = torch.where(mask[batch].unsqueeze(1), target, torch.zeros_like(target))
    per_atom = ((pred - target) ** 2).mean(dim=1)
    values = segment_mean(per_atom, batch, num_molecules)
    if mask is not None:
        values = torch.where(mask, values, torch.zeros_like(values))
    return values


def squared_error_per_molecule(a, b, batch, num_molecules):
    return segment_mean(((a - b) ** 2).sum(dim=1), batch, num_molecules)


def denoising_per_molecule(eps_hat, eps, batch, num_molecules):
    return squared_error_per_molecule(eps_hat, eps.detach(), batch, num_molecules)


def _energy_and_point(energy, teacher, structure, flow):
    """The energy to evaluate and the point to evaluate it at, under a flow."""
    if flow == "both":
        x = structure if structure.requires_grad else structure.detach().requires_grad_(True)
        return energy, x
    if flow == "to_energy":
        return energy, structure.detach().requires_grad_(True)
    # to_structure: a frozen teacher at the structure itself.
    x = structure if structure.requires_grad else structure.detach().requires_grad_(True)
    return teacher, x


def stationarity_per_molecule(energy, teacher, structure, batch, num_molecules, flow):
    """``(1/n_b) sum_{i in b} ||dE(R_hat)/dR_hat_i||^2`` (eV²/Å²)."""
    model, x = _energy_and_point(energy, teacher, structure, flow)
    (grad,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    return segment_mean((grad**2).sum(dim=1), batch, num_molecules)


def energy_descent_per_molecule(energy, teacher, structure, reference, batch, num_molecules, flow):
    """``(E(R_hat_b) - sg E(R_ref,b)) / n_b`` (eV/atom)."""
    with torch.no_grad():
        e_ref = energy(reference)
    model, x = _energy_and_point(energy, teacher, structure, flow)
    return (model(x) - e_ref) / counts(batch, num_molecules, structure.dtype)


def score_target(forces, alpha, sigma, kt, batch, num_molecules):
    """``eps* = -(s/a) centre(F) / kT`` per atom."""
    ratio = (-(sigma / alpha) / kt)[batch].unsqueeze(1)
    return centre(forces, batch, num_molecules) * ratio


def score_per_molecule(
    eps_hat, alpha, sigma, kt, batch, num_molecules, flow, energy=None, clean=None, forces=None
):
    """``(1/n_b) sum_{i in b} ||eps_hat_i - eps*_i||^2``, ``eps* = -(s/a) F(R)/kT``."""
    if forces is not None:
        f = forces.detach()
    else:
        energy_learns = flow != "to_structure"
        if flow == "both" and clean.requires_grad:
            x = clean
        else:
            x = clean.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x).sum(), x, create_graph=energy_learns)
        f = -grad
    target = score_target(f, alpha, sigma, kt, batch, num_molecules)
    if flow == "to_structure":
        target = target.detach()
    elif flow == "to_energy":
        eps_hat = eps_hat.detach()
    return squared_error_per_molecule(eps_hat, target, batch, num_molecules)


def energy_and_forces(energy, pos, create_graph):
    x = pos if (create_graph and pos.requires_grad) else pos.detach().requires_grad_(True)
    e = energy(x)
    (grad,) = torch.autograd.grad(e.sum(), x, create_graph=create_graph)
    return e, -grad


def kabsch_rmsd(pred, reference, batch, num_molecules):
    """RMSD after the optimal proper rotation, the rotation held fixed (envelope theorem)."""
    p = centre(pred, batch, num_molecules)
    q = centre(reference, batch, num_molecules)
    out = []
    for b in range(num_molecules):
        pb, qb = p[batch == b], q[batch == b]
        h = pb.detach().T @ qb.detach()
        u, _, vh = torch.linalg.svd(h)
        d = torch.sign(torch.det(vh.T @ u.T))
        rot = vh.T @ torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d])) @ u.T
        out.append((((pb @ rot.T) - qb) ** 2).sum(dim=1).mean().sqrt())
    return torch.stack(out)
