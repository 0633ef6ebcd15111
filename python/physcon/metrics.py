"""Evaluation metrics: Kabsch RMSD, energy gap, energy MAE."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _checks as check
from ._batch import Batch, BatchLike, as_batch
from ._checks import Finite
from ._energy import EnergyFn, evaluate
from .losses import EnergyLoss


def kabsch_rmsd(pred: Tensor, reference: Tensor, batch: BatchLike) -> Tensor:
    """RMSD (Å) per molecule after optimal superposition by a proper rotation (Kabsch), all atoms.

    ```text
    RMSD_b = min_{Q in SO(3)} sqrt( (1/n_b) sum_{i in b} || Q (x_i - c_x) - (y_i - c_y) ||^2 )
    ```

    with ``c`` the centroids. The rotation comes from the SVD of the 3x3
    covariance with the determinant sign fixed (no reflections), which is
    optimal for planar and linear molecules too. It is found without
    autograd: by the envelope theorem the gradient of the minimum is that of
    the objective at the optimal rotation held fixed, so the gradient is exact
    and never passes through the SVD's unstable backward. At RMSD 0 (round-off
    included: a mean squared deviation below ``(1000 eps)^2`` times the
    molecule's mean ``|x_i - c_x|^2 + |y_i - c_y|^2``) the value and the
    gradient are exactly 0, not NaN.

    Shapes: ``pred``, ``reference`` ``[N, 3]`` (Å), one float dtype; returns ``[B]``.
    """
    b = as_batch(batch)
    b.check_atoms3("pred", pred)
    check.finite("pred", pred)
    b.check_atoms3("reference", reference)
    check.finite("reference", reference)
    check.same_dtype("reference", reference, pred.dtype)
    p = b.centre(pred)
    q = b.centre(reference)
    with torch.no_grad():
        rotation = _optimal_rotations(p.detach(), q.detach(), b)
    rotated = torch.matmul(b.expand(rotation), p.unsqueeze(2)).squeeze(2)
    sq = (rotated - q).square().sum(dim=1, dtype=pred.dtype)
    msd = b.mean(sq)
    positive = msd > _round_off_floor(p, q, b)
    safe = torch.where(positive, msd, torch.ones_like(msd))
    return torch.where(positive, safe.sqrt(), torch.zeros_like(msd))


def _round_off_floor(p: Tensor, q: Tensor, b: Batch) -> Tensor:
    eps = torch.finfo(torch.float64).eps if p.dtype == torch.float64 else torch.finfo(torch.float32).eps
    p, q = p.detach(), q.detach()
    size = (p.square() + q.square()).sum(dim=1, dtype=p.dtype)
    return b.mean(size) * (1e3 * eps) ** 2


def _optimal_rotations(p: Tensor, q: Tensor, b: Batch) -> Tensor:
    """Proper rotations ``[B, 3, 3]`` minimising ``sum_i ||Q p_i - q_i||^2`` for centred ``p``, ``q``."""
    dtype = p.dtype
    # LAPACK has no half-precision SVD.
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    p, q = p.to(work), q.to(work)
    h = b.sum(p.unsqueeze(2) * q.unsqueeze(1))
    u, _, vh = torch.linalg.svd(h)
    v = vh.transpose(1, 2)
    ut = u.transpose(1, 2)
    det = torch.linalg.det(torch.matmul(v, ut))
    ones = torch.ones_like(det)
    d = torch.where(det >= 0, ones, -ones)
    diag = torch.stack([ones, ones, d], dim=1)
    rotation = torch.matmul(v * diag.unsqueeze(1), ut)
    return rotation.to(dtype)


def energy_gap(energy: EnergyFn, pred: Tensor, reference: Tensor, batch: BatchLike) -> Tensor:
    """Energy gap ``E(pred) - E(reference)`` (eV) per molecule under a given energy, without graph.

    With the model's own energy this says how far a generated structure sits
    above the reference on the model's surface; with an external energy it is
    the evaluation's EGap. Shapes: ``pred``, ``reference`` ``[N, 3]`` (Å);
    returns ``[B]``.
    """
    b = as_batch(batch)
    finite = Finite()
    b.check_atoms3("pred", pred, finite)
    b.check_atoms3("reference", reference, finite)
    check.same_dtype("reference", reference, pred.dtype)
    with torch.no_grad():
        # Detached views: a model may call requires_grad_ on the positions it is given (MACE does).
        gap = evaluate(energy, pred.detach(), b, finite) - evaluate(energy, reference.detach(), b, finite)
    finite.finish()
    return gap


def energy_mae(pred: Tensor, target: Tensor, batch: BatchLike, mask: Optional[Tensor] = None) -> Tensor:
    """Mean absolute energy error (eV) over labelled molecules, without graph.

    ```text
    MAE = sum_b m_b |E_pred,b - E_ref,b| / max(sum_b m_b, 1)
    ```

    Shapes: ``pred``, ``target`` ``[B]`` (eV); ``mask`` ``[B]`` bool; returns a scalar.
    """
    with torch.no_grad():
        return EnergyLoss("l1")(pred, target, batch, mask)
