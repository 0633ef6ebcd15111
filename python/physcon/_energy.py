"""Energy models and their derivatives.

An energy model is any callable ``pos [N, 3] (Å) -> [B] (eV)``: an
``nn.Module``, or a lambda closing over species and batch. It must compute
from the ``pos`` it is given, with autograd (twice differentiable for the
stationarity loss and for force training: SiLU, not ReLU).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Tuple

import torch
from torch import Tensor

from . import _checks as check
from ._batch import Batch, BatchLike, as_batch
from ._checks import Finite

EnergyFn = Callable[[Tensor], Tensor]

NO_POSITION_DEPENDENCE = (
    "`energy model output` does not depend on the positions it was given: autograd finds no path from "
    "the positions passed to the model to its energies, so the forces would be zero and the loss a silent "
    "zero. The model must compute from its argument (not from a tensor captured when it was built, and not "
    "from `pos.detach()`); a model that takes a batch object needs the positions set on it, e.g. "
    "`lambda x: model(data.replace(pos=x))` or `data.pos = x` inside the callable"
)

NO_GRAPH = (
    "`energy model output` has no autograd graph: the energy must be computed from the positions it is "
    "given, with grad enabled"
)


def refuse_inference_mode(what: str) -> None:
    """Derivatives need autograd, which ``torch.inference_mode()`` switches off for good."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{what} needs autograd (forces are derivatives of the energy), which torch.inference_mode() "
            "switches off; use torch.no_grad() instead: physcon then takes the derivatives it needs and "
            "returns tensors without a graph"
        )


def refuse_inference_tensor(arg: str, t: Tensor) -> None:
    if t.is_inference():
        raise RuntimeError(
            f"`{arg}` was created under torch.inference_mode() and cannot take part in autograd; "
            f"make it outside inference mode (or pass `{arg}.clone()` made under torch.no_grad())"
        )


@contextlib.contextmanager
def derivatives() -> Iterator[bool]:
    """Grad mode on for the derivatives; yields whether the caller's grad mode was off.

    Under ``torch.no_grad()`` physcon behaves as a PyTorch force field does
    (``torch.enable_grad()`` inside): the derivatives are taken, and what
    comes back must be detached (the caller asked for no graph).
    """
    enabled = torch.is_grad_enabled()
    with torch.enable_grad():
        yield not enabled


def leaf_copy(x: Tensor) -> Tensor:
    """A detached copy of ``x`` that requires grad: the leaf the frozen-teacher recipe differentiates."""
    return x.detach().requires_grad_(True)


def evaluate(model: EnergyFn, pos: Tensor, b: Batch, finite: Finite) -> Tensor:
    """The model's energies at ``pos``, checked to be ``[B]`` of ``pos``'s dtype (finiteness queued)."""
    energy = model(pos)
    if not isinstance(energy, Tensor):
        raise TypeError(
            f"the energy model must return a torch.Tensor of molecule energies [B], got {type(energy).__name__}"
        )
    b.check_molecules("energy model output", energy, finite)
    check.same_dtype("energy model output", energy, pos.dtype)
    return energy


def grad_or_zeros(output: Tensor, x: Tensor, *, retain_graph: bool, create_graph: bool) -> Tensor:
    """``d output / d x`` as ``torch.autograd.grad`` returns it, zeros where ``output`` does not depend on ``x``."""
    if not output.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(
        output, x, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
    )
    return torch.zeros_like(x) if grad is None else grad


def grad_of_energy(energy: Tensor, x: Tensor, *, retain_graph: bool, create_graph: bool) -> Tensor:
    """``d sum(energy) / dx`` for energies (or a loss made of them) computed at ``x``; refuses
    an output without a graph and one that does not depend on ``x`` (a silent zero otherwise)."""
    if not energy.requires_grad:
        raise ValueError(NO_GRAPH)
    total = energy if energy.dim() == 0 else energy.sum(dtype=energy.dtype)
    (grad,) = torch.autograd.grad(total, x, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True)
    if grad is None:
        raise ValueError(NO_POSITION_DEPENDENCE)
    return grad


def energy_and_grad(
    model: EnergyFn, x: Tensor, b: Batch, finite: Finite, *, retain_graph: bool, create_graph: bool
) -> Tuple[Tensor, Tensor]:
    """``E(x)`` and ``dE/dx`` (``x`` must require grad); an energy that does not depend on ``x`` is refused."""
    energy = evaluate(model, x, b, finite)
    return energy, grad_of_energy(energy, x, retain_graph=retain_graph, create_graph=create_graph)


def energy_and_forces(
    model: EnergyFn, pos: Tensor, batch: BatchLike, *, create_graph: bool = False
) -> Tuple[Tensor, Tensor]:
    """Energies and forces ``F = -dE/dR`` of an energy model at ``pos``, from one forward.

    What a trainer feeds the energy and force losses (``EnergyLoss``,
    ``ForceLoss``): the energy keeps its graph to the model's parameters, and
    with ``create_graph=True`` the forces keep theirs, so a force loss trains
    the model through a double backward (the forward's graph is kept for the
    energy loss's backward too). Without ``create_graph`` the forces are
    constants and no parameter's ``.grad`` is touched. ``pos`` that carries a
    graph (a generated structure) keeps it under ``create_graph``; otherwise
    the forces are taken on a detached copy.

    Shapes: ``pos`` ``[N, 3]`` (Å); returns ``(energy [B] (eV), forces [N, 3] (eV/Å))``.
    ``model`` is any callable ``pos -> [B]`` energies.

    Errors: ``ValueError``/``TypeError`` naming ``pos`` (shape, dtype, device,
    NaN), a model output that is not a finite ``[B]`` of ``pos``'s dtype,
    non-finite forces, or an energy that does not depend on the positions it
    was given (which would give zero forces). Under ``torch.no_grad()`` the
    forces are still taken and nothing returned has a graph;
    ``torch.inference_mode()`` is refused (forces need autograd). The
    finiteness checks cost one device-to-host read.
    """
    refuse_inference_mode("energy_and_forces")
    b = as_batch(batch)
    finite = Finite()
    b.check_atoms3("pos", pos, finite)
    refuse_inference_tensor("pos", pos)
    with derivatives() as detach:
        x = pos if (create_graph and pos.requires_grad) else leaf_copy(pos)
        # The energy keeps its graph for the energy loss's backward, whether or not the forces get one.
        energy, grad = energy_and_grad(model, x, b, finite, retain_graph=True, create_graph=create_graph)
        finite.add("forces", grad)
        finite.finish()
        forces = -grad
    if detach:
        return energy.detach(), forces.detach()
    return energy, forces


def forces(model: EnergyFn, pos: Tensor, batch: BatchLike, *, create_graph: bool = False) -> Tensor:
    """The forces of ``energy_and_forces``, for when the energy itself is not needed."""
    return energy_and_forces(model, pos, batch, create_graph=create_graph)[1]
