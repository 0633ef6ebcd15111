"""Losses, one convention for all of them.

Every loss is a ``torch.nn.Module`` built once with its settings validated in
``__init__`` (keyword arguments), then called per batch:

- ``loss(inputs..., batch)``: the scalar loss, reduced per molecule first
  (mean over its atoms) and then over molecules, with its autograd graph;
- ``loss.per_molecule(inputs..., batch)``: the same before the last
  reduction, a ``PerMolecule`` of ``[B]`` values for logging, masking and
  weighting; ``loss(...)`` is ``loss.per_molecule(...).mean()``.

Inputs come first, ``batch`` (a ``[N]`` int64 tensor or a ``physcon.Batch``)
after them. Inputs are checked for shape, dtype, device and finiteness
(``checks="metadata"`` skips the finiteness checks' one host read).

| loss | formula per molecule b | units |
|---|---|---|
| EnergyLoss | l((E_pred - E_ref)_b [/ n_b]) | eV (or eV/atom), squared for MSE |
| ForceLoss | (1/3n_b) sum_i ||F_pred,i - F_ref,i||^2 | eV²/Å² |
| DenoisingLoss | (1/n_b) sum_i ||eps_hat_i - eps_i||^2 | dimensionless |
| StationarityLoss | (1/n_b) sum_i ||dE(R_hat)/dR_hat_i||^2 | eV²/Å² |
| EnergyDescentLoss | (E(R_hat_b) - sg E(R_ref,b)) / n_b | eV/atom |
| ScoreConsistency | (1/n_b) sum_i ||eps_hat_i - eps*_i||^2, eps* = -(s/a) F/kT | dimensionless |
"""

from __future__ import annotations

import math

import enum
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from . import _checks as check
from ._batch import Batch, BatchLike, as_batch
from ._checks import Finite
from ._energy import (
    EnergyFn,
    derivatives,
    energy_and_grad,
    evaluate,
    grad_of_energy,
    grad_or_zeros,
    leaf_copy,
    refuse_inference_mode,
    refuse_inference_tensor,
)
from .diffusion import NoiseLevel
from .units import kelvin_to_kt

# kT above this, in any energy unit molecular ML uses, is no molecular
# simulation's: 10 eV is 116,000 K, 10 kcal/mol 5,000 K, 10 kJ/mol 1,200 K.
# A temperature in kelvin passed as kT lands here.
KT_LIMIT = 10.0


class GradientFlow(enum.IntEnum):
    """Which model a consistency loss trains.

    - ``TO_STRUCTURE`` (default): the energy model is an exact frozen teacher;
      gradient reaches the structure (and the structure model) but no
      parameter used only by the energy evaluation, even with a shared encoder.
    - ``BOTH``: plain backward into everything that took part.
    - ``TO_ENERGY``: the structure is a constant; only the energy model moves.

    Losses also accept the strings ``"to_structure"``, ``"both"``, ``"to_energy"``.
    """

    TO_STRUCTURE = 0
    BOTH = 1
    TO_ENERGY = 2

    def __repr__(self) -> str:
        return f"GradientFlow.{self.name}"

    __str__ = __repr__

    @classmethod
    def of(cls, flow: object) -> "GradientFlow":
        """A flow from a ``GradientFlow`` or its name (any case); ``None`` is the default."""
        if flow is None:
            return cls.TO_STRUCTURE
        if isinstance(flow, cls):
            return flow
        if isinstance(flow, str) and flow.upper() in cls.__members__:
            return cls[flow.upper()]
        raise ValueError(
            f"`flow`: expected a physcon.GradientFlow or one of 'to_structure', 'both', 'to_energy', got {flow!r}"
        )


def _checks_of(checks: object) -> str:
    if checks not in ("full", "metadata"):
        raise ValueError(f"`checks`: expected 'full' or 'metadata', got {checks!r}")
    return str(checks)


class PerMolecule:
    """A loss before its reduction over molecules: one value per molecule, ``[B]``.

    ``values`` keeps its autograd graph (zero where ``mask`` is false: those
    labels are missing and leave every reduction, NaN placeholders included);
    ``mean()`` equals the loss's scalar in value and gradient;
    ``weighted_mean(weights)`` is ``sum_b w_b m_b l_b / sum_b w_b m_b`` over
    labelled molecules (weights ``[B]``, finite, ``>= 0``, constants).
    Picklable.
    """

    __slots__ = ("values", "mask", "checks")

    def __init__(self, values: Tensor, mask: Optional[Tensor] = None, checks: str = "full") -> None:
        if mask is not None:
            values = torch.where(mask, values, torch.zeros_like(values))
        self.values = values
        self.mask = mask
        self.checks = checks

    def __getstate__(self):
        return (self.values, self.mask, self.checks)

    def __setstate__(self, state) -> None:
        self.values, self.mask, self.checks = state

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __repr__(self) -> str:
        return f"PerMolecule(num_molecules={len(self)}, masked={self.mask is not None})"

    def mean(self) -> Tensor:
        """``sum_b m_b l_b / max(sum_b m_b, 1)``: the mean over labelled molecules (all
        without a mask); with no labelled molecule, a zero that keeps the graph."""
        dtype = self.values.dtype
        if self.mask is None:
            return self.values.mean(dtype=dtype)
        count = self.mask.sum(dtype=dtype).clamp_min(1.0)
        return self.values.sum(dtype=dtype) / count

    def weighted_mean(self, weights: Tensor) -> Tensor:
        """``sum_b w_b m_b l_b / sum_b w_b m_b``: the weighted mean over labelled molecules.

        The weights are constants: they receive no gradient, even when they
        carry a graph. When no labelled molecule has weight, a zero that keeps
        the graph. ``weights``: ``[B]``, the dtype and device of the values,
        finite and ``>= 0`` (checked with one host read unless the loss was
        built with ``checks="metadata"``).
        """
        values = self.values
        weights = check.float_tensor("weights", weights)
        check.same_dtype("weights", weights, values.dtype)
        check.shape("weights", weights, tuple(values.shape), "[B]")
        check.on_device("weights", weights, values.device, of="the loss")
        if self.checks == "full" and values.numel() > 0 and not check.is_compiling():
            low, total = check.host_floats([weights.min(), weights.sum(dtype=torch.float64)])
            if not (low >= 0.0 and math.isfinite(total)):
                raise ValueError(f"`weights`: must be finite and >= 0 (smallest {low}, sum {total})")
        weights = weights.detach()
        if self.mask is not None:
            weights = torch.where(self.mask, weights, torch.zeros_like(weights))
        total = weights.sum(dtype=values.dtype)
        total = torch.where(total > 0, total, torch.ones_like(total))
        return (values * weights).sum(dtype=values.dtype) / total


def _finish(values: Tensor, mask: Optional[Tensor], checks: str, detach: bool = False) -> PerMolecule:
    return PerMolecule(values.detach() if detach else values, mask, checks)


# ---------------------------------------------------------------------------
# Supervised losses


def _checked_labels(
    finite: Finite,
    pred: Tensor,
    target: Tensor,
    mask: Optional[Tensor],
    b: Batch,
    atoms: bool,
) -> Tensor:
    """The labels as constants, unlabelled entries replaced by zeros so that a NaN
    placeholder cannot leak into the loss or its gradient (finiteness queued)."""
    if atoms:
        b.check_atoms3("pred", pred, finite)
        words = "[N, 3]"
    else:
        b.check_molecules("pred", pred, finite)
        words = "[B]"
    target = check.float_tensor("target", target)
    check.same_dtype("target", target, pred.dtype)
    check.on_device("target", target, b.device)
    check.shape("target", target, tuple(pred.shape), words)
    target = target.detach()
    if mask is not None:
        mask = b.check_mask("mask", mask)
        where = b.expand(mask).unsqueeze(1) if atoms else mask
        target = torch.where(where, target, torch.zeros_like(target))
    finite.add("target", target)
    return target


class _Supervised(nn.Module):
    """A prediction against labels, with a mask over molecules: ``forward`` and
    ``per_molecule`` of ``EnergyLoss`` (``[B]`` values) and ``ForceLoss`` (``[N, 3]``)."""

    atoms = False
    checks = "full"

    def forward(self, pred: Tensor, target: Tensor, batch: BatchLike, mask: Optional[Tensor] = None) -> Tensor:
        return self.per_molecule(pred, target, batch, mask).mean()

    def per_molecule(
        self, pred: Tensor, target: Tensor, batch: BatchLike, mask: Optional[Tensor] = None
    ) -> PerMolecule:
        """The loss of every molecule, ``[B]``, with the mask (zero where unlabelled)."""
        b = as_batch(batch)
        finite = Finite(self.checks == "full")
        target = _checked_labels(finite, pred, target, mask, b, atoms=self.atoms)
        values = self._values(pred, target, b)
        finite.finish()
        return _finish(values, mask, self.checks)

    def _values(self, pred: Tensor, target: Tensor, b: Batch) -> Tensor:
        raise NotImplementedError


class EnergyLoss(_Supervised):
    """Energy loss on molecule energies.

    ```text
    e_b = E_pred,b - E_ref,b            (or (E_pred,b - E_ref,b) / n_b with per_atom)
    L   = sum_b m_b l(e_b) / max(sum_b m_b, 1)
    ```

    with ``l`` from ``metric``: ``"mse"`` (``e^2``), ``"l1"`` (``|e|``) or
    ``"huber"`` (``e^2 / 2`` for ``|e| <= delta``, ``delta (|e| - delta / 2)``
    beyond: PyTorch's ``HuberLoss``; ``delta`` in eV, or eV/atom with
    ``per_atom``), and ``m`` the optional label mask. Units: eV (L1, Huber)
    or eV² (MSE); per atom with ``per_atom=True`` (MACE's convention).

    ``EnergyLoss(metric="mse", *, delta=1.0, per_atom=False, checks="full")``;
    ``loss(pred, target, batch, mask=None)`` with ``pred``, ``target`` ``[B]``
    (eV) and ``mask`` ``[B]`` bool (true = labelled; unlabelled targets may be
    NaN). The target is a constant.
    """

    def __init__(self, metric: str = "mse", *, delta: float = 1.0, per_atom: bool = False, checks: str = "full"):
        super().__init__()
        if metric not in ("mse", "l1", "huber"):
            raise ValueError(f"`metric`: expected 'mse', 'l1' or 'huber', got {metric!r}")
        self.metric = metric
        self.delta = check.positive("delta", delta) if metric == "huber" else float(delta)
        self.per_atom = bool(per_atom)
        self.checks = _checks_of(checks)

    def extra_repr(self) -> str:
        delta = f", delta={self.delta}" if self.metric == "huber" else ""
        return f"metric='{self.metric}'{delta}, per_atom={self.per_atom}, checks='{self.checks}'"

    def _values(self, pred: Tensor, target: Tensor, b: Batch) -> Tensor:
        err = pred - target
        if self.per_atom:
            err = err / b.counts_as(pred.dtype)
        if self.metric == "l1":
            return err.abs()
        if self.metric == "mse":
            return err.square()
        abs_err = err.abs()
        quadratic = err.square() * 0.5
        linear = (abs_err - 0.5 * self.delta) * self.delta
        return torch.where(abs_err <= self.delta, quadratic, linear)


class ForceLoss(_Supervised):
    """Force loss: per-atom component MSE with an optional mask over molecules.

    ```text
    L = sum_b m_b [ (1/n_b) sum_{i in b} (1/3) ||F_pred,i - F_ref,i||^2 ] / max(sum_b m_b, 1)
    ```

    Units eV²/Å². Molecules outside the mask (frames without force labels)
    contribute nothing, whatever their reference holds (NaN included); a batch
    without labelled molecules gives a zero that keeps the graph. Take
    ``F_pred`` and the energy from one forward with ``energy_and_forces``.

    ``ForceLoss(*, checks="full")``; ``loss(pred, target, batch, mask=None)``
    with ``pred``, ``target`` ``[N, 3]`` (eV/Å) and ``mask`` ``[B]`` bool.
    """

    atoms = True

    def __init__(self, *, checks: str = "full"):
        super().__init__()
        self.checks = _checks_of(checks)

    def extra_repr(self) -> str:
        return f"checks='{self.checks}'"

    def _values(self, pred: Tensor, target: Tensor, b: Batch) -> Tensor:
        return b.mean((pred - target).square().mean(dim=1, dtype=pred.dtype))


def _squared_error_per_molecule(a: Tensor, c: Tensor, b: Batch) -> Tensor:
    """``(1/n_b) sum_{i in b} ||a_i - c_i||^2`` per molecule ``[B]``."""
    return b.mean((a - c).square().sum(dim=1, dtype=a.dtype))


class DenoisingLoss(nn.Module):
    """Denoising (eps-prediction) loss.

    ```text
    L = mean_b (1/n_b) sum_{i in b} || eps_hat_i - eps_i ||^2
    ```

    Dimensionless (noise is in units of the noise scale).
    ``DenoisingLoss(*, checks="full")``; ``loss(eps_hat, eps, batch)`` with
    ``eps_hat``, ``eps`` ``[N, 3]`` (the noise is a constant target).
    """

    def __init__(self, *, checks: str = "full"):
        super().__init__()
        self.checks = _checks_of(checks)

    def extra_repr(self) -> str:
        return f"checks='{self.checks}'"

    def forward(self, eps_hat: Tensor, eps: Tensor, batch: BatchLike) -> Tensor:
        return self.per_molecule(eps_hat, eps, batch).mean()

    def per_molecule(self, eps_hat: Tensor, eps: Tensor, batch: BatchLike) -> PerMolecule:
        """``(1/n_b) sum_i ||eps_hat_i - eps_i||^2`` of every molecule, ``[B]``."""
        b = as_batch(batch)
        finite = Finite(self.checks == "full")
        b.check_atoms3("eps_hat", eps_hat, finite)
        b.check_atoms3("eps", eps, finite)
        check.same_dtype("eps", eps, eps_hat.dtype)
        finite.finish()
        return _finish(_squared_error_per_molecule(eps_hat, eps.detach(), b), None, self.checks)


# ---------------------------------------------------------------------------
# Consistency losses


def _surrogate(value: Tensor, v: Tensor, x: Tensor, b: Batch) -> Tensor:
    """The value ``value`` with gradient ``v`` with respect to ``x`` and no path to
    anything else ``value`` was computed from: ``value.detach() + sum v . (x - x.detach())``,
    the sum over every atom for a scalar ``value`` and per molecule for a ``[B]`` one.

    The exact frozen-teacher recipe: ``v`` was taken on a detached leaf copy of
    ``x``, so no parameter of the teacher sees a gradient. Exact per molecule
    because molecules do not interact (no gradient leaks between them).
    """
    value = value.detach()
    if not x.requires_grad:
        return value
    product = v.detach() * (x - x.detach())
    if value.dim() == 0:
        return value + product.sum(dtype=value.dtype)
    return value + b.sum(product.sum(dim=1, dtype=value.dtype))


def _with_flow(
    flow: GradientFlow,
    structure: Tensor,
    b: Batch,
    finite: Finite,
    per_molecule: Callable[[Tensor], Tensor],
    *,
    reduce: bool,
    required: bool,
) -> Tensor:
    """``per_molecule(x)`` ``[B]`` at the structure under the gradient flow, its mean
    with ``reduce`` (finiteness queued).

    ``required``: under ``TO_STRUCTURE``, no path from the structure to the loss
    means the energy ignores its positions (the descent loss); otherwise such a
    loss has a legitimate zero gradient (the stationarity of a linear energy,
    whose dependence on the positions ``per_molecule`` checked itself).
    """
    x = structure if (flow == GradientFlow.BOTH and structure.requires_grad) else leaf_copy(structure)
    value = per_molecule(x)
    if reduce:
        value = value.mean(dtype=value.dtype)
    finite.add("optimality loss (the energy's gradient)", value)
    if flow != GradientFlow.TO_STRUCTURE:
        return value
    # Molecules do not interact, so the gradient of the sum holds each molecule's own gradient on its atoms.
    total = value if reduce else value.sum(dtype=value.dtype)
    if required:
        v = grad_of_energy(total, x, retain_graph=False, create_graph=False)
    else:
        v = grad_or_zeros(total, x, retain_graph=False, create_graph=False)
    return _surrogate(value, v, structure, b)


def _consistency_setup(flow: object, checks: object) -> Tuple[GradientFlow, str]:
    return GradientFlow.of(flow), _checks_of(checks)


class StationarityLoss(nn.Module):
    """Optimality consistency, the literal law: the energy gradient vanishes at equilibrium.

    ```text
    L = mean_b (1/n_b) sum_{i in b} || dE(R_hat)/dR_hat_i ||^2        [eV²/Å²]
    ```

    Zero exactly at stationary points of the predicted energy (saddles
    included). Its gradient is a Hessian-vector product: the energy model must
    be twice differentiable (SiLU, not ReLU). For the first-order form see
    ``EnergyDescentLoss``.

    The ``flow`` (a ``GradientFlow``) says which model learns. With the default
    ``TO_STRUCTURE`` the energy model is an exact frozen teacher: the loss is
    evaluated on a detached leaf copy ``R'`` of the structure, ``v = dL/dR'``
    is taken with autograd restricted to ``R'``, and the returned value has
    the value ``L`` and the gradient ``v`` with respect to the structure, so no
    energy parameter receives gradient even when both heads share an encoder.

    ``StationarityLoss(*, flow=GradientFlow.TO_STRUCTURE, checks="full")``;
    ``loss(energy, structure, batch)`` with ``energy`` any callable
    ``pos [N, 3] -> [B]`` energies (an ``nn.Module``, or a lambda closing over
    species and batch) and ``structure`` ``[N, 3]`` (Å), e.g. a generated
    structure with its graph. An energy that does not depend on the positions
    it is given raises ``ValueError`` (it would make the loss a silent zero).
    """

    def __init__(self, *, flow: Union[GradientFlow, str, None] = None, checks: str = "full"):
        super().__init__()
        self.flow, self.checks = _consistency_setup(flow, checks)

    def extra_repr(self) -> str:
        return f"flow={self.flow!r}, checks='{self.checks}'"

    def forward(self, energy: EnergyFn, structure: Tensor, batch: BatchLike) -> Tensor:
        return self._run(energy, structure, batch, reduce=True)

    def per_molecule(self, energy: EnergyFn, structure: Tensor, batch: BatchLike) -> PerMolecule:
        """``(1/n_b) sum_{i in b} ||dE/dR_hat_i||^2`` of every molecule, ``[B]``."""
        return _finish(self._run(energy, structure, batch, reduce=False), None, self.checks)

    def _run(self, energy: EnergyFn, structure: Tensor, batch: BatchLike, reduce: bool) -> Tensor:
        refuse_inference_mode("StationarityLoss")
        b = as_batch(batch)
        finite = Finite(self.checks == "full")
        b.check_atoms3("structure", structure, finite)
        refuse_inference_tensor("structure", structure)

        def per_molecule(x: Tensor) -> Tensor:
            _, grad = energy_and_grad(energy, x, b, finite, retain_graph=True, create_graph=True)
            return b.mean(grad.square().sum(dim=1, dtype=x.dtype))

        with derivatives() as detach:
            value = _with_flow(self.flow, structure, b, finite, per_molecule, reduce=reduce, required=False)
            finite.finish()
        return value.detach() if detach else value


class EnergyDescentLoss(nn.Module):
    """Optimality consistency, first order: push the structure downhill on the predicted energy.

    ```text
    L = mean_b (1/n_b) ( E(R_hat_b) - sg(E(R_ref_b)) )                [eV/atom]
    ```

    ``sg`` stops the gradient; the value reads as a per-atom energy gap to the
    reference structure ``R_ref`` (e.g. the training structure the generated
    one was made from). Needs no double backward. The ``flow`` works as for
    ``StationarityLoss``.

    ``EnergyDescentLoss(*, flow=GradientFlow.TO_STRUCTURE, checks="full")``;
    ``loss(energy, structure, reference, batch)`` with ``structure``,
    ``reference`` ``[N, 3]`` (Å), one float dtype. An energy that does not
    depend on the positions it is given raises ``ValueError``.
    """

    def __init__(self, *, flow: Union[GradientFlow, str, None] = None, checks: str = "full"):
        super().__init__()
        self.flow, self.checks = _consistency_setup(flow, checks)

    def extra_repr(self) -> str:
        return f"flow={self.flow!r}, checks='{self.checks}'"

    def forward(self, energy: EnergyFn, structure: Tensor, reference: Tensor, batch: BatchLike) -> Tensor:
        return self._run(energy, structure, reference, batch, reduce=True)

    def per_molecule(self, energy: EnergyFn, structure: Tensor, reference: Tensor, batch: BatchLike) -> PerMolecule:
        """``(E(R_hat_b) - sg E(R_ref,b)) / n_b`` of every molecule, ``[B]``."""
        return _finish(self._run(energy, structure, reference, batch, reduce=False), None, self.checks)

    def _run(self, energy: EnergyFn, structure: Tensor, reference: Tensor, batch: BatchLike, reduce: bool) -> Tensor:
        refuse_inference_mode("EnergyDescentLoss")
        b = as_batch(batch)
        finite = Finite(self.checks == "full")
        b.check_atoms3("structure", structure, finite)
        b.check_atoms3("reference", reference, finite)
        check.same_dtype("reference", reference, structure.dtype)
        refuse_inference_tensor("structure", structure)
        flow = self.flow
        with torch.no_grad():
            # A detached view: a model may call requires_grad_ on the positions it is given (MACE does).
            reference_energy = evaluate(energy, reference.detach(), b, finite)

        def per_molecule(x: Tensor) -> Tensor:
            e = evaluate(energy, x, b, finite)
            if flow != GradientFlow.TO_STRUCTURE:
                # Under TO_STRUCTURE `_with_flow` finds a missing path for free; here it costs one backward.
                grad_of_energy(e, x, retain_graph=True, create_graph=False)
            return (e - reference_energy) / b.counts_as(x.dtype)

        with derivatives() as detach:
            value = _with_flow(flow, structure, b, finite, per_molecule, reduce=reduce, required=True)
            finite.finish()
        return value.detach() if detach else value


class ScoreConsistency(nn.Module):
    """Score consistency: the diffusion model's small-noise score must equal the energy model's force / kT.

    ```text
    L = mean_b (1/n_b) sum_{i in b} || eps_hat(R_t, t)_i - eps*_i ||^2,    eps* = -(s/a) F(R)/kT
    ```

    for ``R_t = a R + s eps``: under ``p(R) ∝ exp(-E/kT)`` the score of the
    clean distribution is ``F/kT``, the score of the noised one at small noise
    is that score divided by ``a``, and ``eps = -s score``; ``F`` is made
    centre-of-mass free per molecule first. The score-space error weighted by
    ``s^2``, on the scale of the denoising loss. Dimensionless. ``kt`` is in
    the unit of the energies (eV: ``kelvin_to_kt(300.0)`` = 0.02585 eV); a
    value above 10 (a temperature in kelvin passed as kT) is refused. Draw
    the noise from a small-noise range and choose kT so that ``s |F| / kT``
    is of order one.

    Any diffusion works: pass the per-molecule ``NoiseLevel`` the noised
    structure was made with:

    | the user's noising | level | target |
    |---|---|---|
    | variance preserving, R_t = a R + s eps | `NoiseLevel(a, s)` | eps* = -(s/a) F/kT |
    | variance exploding, R_sigma = R + sigma eps (EDM) | `NoiseLevel.sigma_only(sigma)` | eps* = -sigma F/kT |

    A model that predicts the clean structure ``D(R_t)`` or the score instead
    of the noise passes ``eps_hat = (R_t - a D) / s`` or ``eps_hat = -s score``.

    The ``flow``: `TO_STRUCTURE` (default) treats ``eps*`` as a constant
    (forces without graph: no energy parameter is touched); ``TO_ENERGY``
    treats ``eps_hat`` and the clean structure as constants and
    differentiates the forces (a double backward) into the energy model only;
    ``BOTH`` does both, and also follows a clean structure that carries a graph.

    ``ScoreConsistency(kt, *, flow=GradientFlow.TO_STRUCTURE, checks="full")``;
    ``loss(eps_hat, level, batch, *, energy=None, clean=None, forces=None)``
    with ``eps_hat`` ``[N, 3]`` the noise prediction at the structure noised
    from ``clean`` at ``level``, and either ``energy=`` (a callable
    ``pos -> [B]``) with ``clean=`` ``[N, 3]`` (Å) for the model's forces, or
    ``forces=`` ``[N, 3]`` (eV/Å) labels (not with ``TO_ENERGY``: nothing would learn).
    """

    def __init__(self, kt: float, *, flow: Union[GradientFlow, str, None] = None, checks: str = "full"):
        super().__init__()
        kt = check.positive("kt", kt)
        if kt > KT_LIMIT:
            raise ValueError(
                f"`kt`: {kt} is kT in the unit of the energies (eV), not a temperature; no molecular "
                f"simulation runs at kT > {KT_LIMIT:g} (116,000 K in eV). For a temperature in kelvin pass "
                f"physcon.kelvin_to_kt({kt:g}) = {kelvin_to_kt(kt):.6g} eV"
            )
        self.kt = kt
        self.flow, self.checks = _consistency_setup(flow, checks)

    def extra_repr(self) -> str:
        return f"kt={self.kt}, flow={self.flow!r}, checks='{self.checks}'"

    def forward(
        self,
        eps_hat: Tensor,
        level: NoiseLevel,
        batch: BatchLike,
        *,
        energy: Optional[EnergyFn] = None,
        clean: Optional[Tensor] = None,
        forces: Optional[Tensor] = None,
    ) -> Tensor:
        return self.per_molecule(eps_hat, level, batch, energy=energy, clean=clean, forces=forces).mean()

    def per_molecule(
        self,
        eps_hat: Tensor,
        level: NoiseLevel,
        batch: BatchLike,
        *,
        energy: Optional[EnergyFn] = None,
        clean: Optional[Tensor] = None,
        forces: Optional[Tensor] = None,
    ) -> PerMolecule:
        """``(1/n_b) sum_{i in b} ||eps_hat_i - eps*_i||^2`` of every molecule, ``[B]``."""
        labels = _forces_source(energy, clean, forces)
        if not isinstance(level, NoiseLevel):
            raise TypeError(f"`level`: expected a physcon.NoiseLevel, got {type(level).__name__}")
        b = as_batch(batch)
        finite = Finite(self.checks == "full")
        b.check_atoms3("eps_hat", eps_hat, finite)
        # The level fixes the dtype: it was made for the coordinates it scales.
        dtype = level.alpha.dtype
        check.same_dtype("eps_hat", eps_hat, dtype)
        level.check(b, dtype)
        flow = self.flow
        if labels:
            if flow == GradientFlow.TO_ENERGY:
                raise ValueError(
                    "`forces`: force labels with GradientFlow.TO_ENERGY leave nothing to train; "
                    "pass energy= and clean= instead"
                )
            b.check_atoms3("forces", forces, finite)
            check.same_dtype("forces", forces, dtype)
            values = self._values(eps_hat, forces.detach(), level, b, finite)
            return _finish(values, None, self.checks)
        refuse_inference_mode("ScoreConsistency with energy=")
        b.check_atoms3("clean structure", clean, finite)
        check.same_dtype("clean structure", clean, dtype)
        refuse_inference_tensor("clean", clean)
        with derivatives() as detach:
            # Only BOTH follows the clean structure's own graph: under TO_ENERGY it is a constant.
            x = clean if (flow == GradientFlow.BOTH and clean.requires_grad) else leaf_copy(clean)
            energy_learns = flow != GradientFlow.TO_STRUCTURE
            _, grad = energy_and_grad(
                energy, x, b, finite, retain_graph=energy_learns, create_graph=energy_learns
            )
            values = self._values(eps_hat, -grad, level, b, finite)
        return _finish(values, None, self.checks, detach)

    def _values(self, eps_hat: Tensor, f: Tensor, level: NoiseLevel, b: Batch, finite: Finite) -> Tensor:
        target = _score_target(f, level, self.kt, b)
        if self.flow == GradientFlow.TO_STRUCTURE:
            target = target.detach()
        elif self.flow == GradientFlow.TO_ENERGY:
            eps_hat = eps_hat.detach()
        values = _squared_error_per_molecule(eps_hat, target, b)
        finite.add("score loss (the energy's forces)", values)
        finite.finish()
        return values


def _forces_source(energy: object, clean: object, forces: object) -> bool:
    """Whether score consistency takes force labels (else the energy model's forces)."""
    given = (energy is not None, clean is not None, forces is not None)
    if given == (True, True, False):
        return False
    if given == (False, False, True):
        return True
    if given == (True, False, False):
        raise ValueError("`clean`: the energy model's forces are taken at the clean structure; pass clean=")
    if given == (False, True, False):
        raise ValueError(
            "`energy`: a clean structure needs the energy model whose forces are the target; pass energy="
        )
    raise ValueError(
        "`forces`: pass either energy= and clean= (the model's forces) or forces= (force labels), not both"
    )


def score_target(forces: Tensor, level: NoiseLevel, kt: float, batch: BatchLike) -> Tensor:
    """The noise-space target of score consistency, ``eps* = -(s / a) centre(F) / kT`` ``[N, 3]``."""
    b = as_batch(batch)
    kt = check.positive("kt", kt)
    b.check_atoms3("forces", forces)
    check.finite("forces", forces)
    level.check(b, forces.dtype)
    return _score_target(forces, level, kt, b)


def _score_target(forces: Tensor, level: NoiseLevel, kt: float, b: Batch) -> Tensor:
    """``eps* = -(s / a) centre(F) / kT`` per atom, without checks."""
    ratio = b.expand(level.sigma / level.alpha / -kt).unsqueeze(1)
    return b.centre(forces) * ratio
