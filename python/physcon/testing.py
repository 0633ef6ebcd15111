"""``check_energy_model``: the checks NequIP runs on its own models
(``model_tests_basic.py``), for a user's energy model over ragged batches."""

from __future__ import annotations

import math
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _checks as check
from ._batch import Batch
from ._checks import Finite
from ._energy import energy_and_forces, evaluate, leaf_copy

# The defaults of the Rust crate's `ModelCheck`.
ROTATION = (0.5, -0.3, 0.7, 0.41)
TRANSLATION = (3.7, -2.9, 5.3)
SYMMETRY_ATOL, SYMMETRY_RTOL = 1e-8, 1e-10
LEAK = 0.0
GRAD_EPS, GRAD_ATOL, GRAD_RTOL = 1e-6, 1e-5, 1e-3
SEGMENT, SEGMENT_DIRECTIONS = 1e-2, 2
SEGMENT_ATOL, SEGMENT_RTOL = 1e-6, 1e-4


class Finding(NamedTuple):
    """One measured quantity of a check: its worst error and what was allowed."""

    check: str
    quantity: str
    worst: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.worst <= self.tolerance  # False for NaN


class ModelReport:
    """The findings of ``check_energy_model``: ``passed``, ``failed`` (the names of
    the failed checks, each once, in check order), ``findings`` (tuples
    ``(check, quantity, worst, tolerance, passed)``), ``str(report)`` a table,
    ``ensure()`` raises ``ValueError`` naming every failure (else returns the report)."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self._findings = list(findings)

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self._findings)

    @property
    def failed(self) -> List[str]:
        out: List[str] = []
        for f in self._findings:
            if not f.passed and f.check not in out:
                out.append(f.check)
        return out

    @property
    def findings(self) -> List[Tuple[str, str, float, float, bool]]:
        return [(f.check, f.quantity, f.worst, f.tolerance, f.passed) for f in self._findings]

    def ensure(self) -> "ModelReport":
        if self.passed:
            return self
        failures = "; ".join(
            f"{f.check} ({f.quantity}): worst {f.worst:e}, tolerance {f.tolerance:e}"
            for f in self._findings
            if not f.passed
        )
        raise ValueError(f"`energy model`: failed the model check: {failures}")

    def __str__(self) -> str:
        return "".join(
            f"{f.check:<15} {f.quantity:<52} worst {f.worst:.3e}  tolerance {f.tolerance:.3e}  "
            f"{'ok' if f.passed else 'FAILED'}\n"
            for f in self._findings
        )

    def __repr__(self) -> str:
        return f"ModelReport(passed={self.passed}, failed={self.failed})"


class _Mol:
    """A batch as the model sees it: positions, species, batch vector and optional bonds."""

    def __init__(self, pos: Tensor, species: Tensor, batch: Tensor, num_molecules: int, bonds=None) -> None:
        self.pos, self.species, self.batch = pos, species, batch
        self.layout = Batch(batch, num_molecules)
        self.bonds = bonds  # (index [E, 2], order [E]) or None

    def with_pos(self, pos: Tensor) -> "_Mol":
        moved = _Mol.__new__(_Mol)
        moved.pos, moved.species, moved.batch, moved.layout, moved.bonds = (
            pos, self.species, self.batch, self.layout, self.bonds
        )
        return moved


def _rotation(q: Sequence[float]) -> List[List[float]]:
    norm = math.sqrt(sum(v * v for v in q))
    w, x, y, z = (v / norm for v in q)
    return [
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
        [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
        [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
    ]


def check_energy_model(
    model: Callable[..., Tensor],
    pos: Tensor,
    species: Tensor,
    batch: Tensor,
    *,
    bonds: Optional[Tensor] = None,
    bond_orders: Optional[Tensor] = None,
) -> ModelReport:
    """Checks an energy model the way NequIP's ``model_tests_basic.py`` checks its
    own: symmetries, batching, forces and second derivatives.

    ``check_energy_model(model, pos, species, batch, *, bonds=None, bond_orders=None)``
    returns a ``ModelReport`` (a model that runs but fails a check is not an
    error: see ``ModelReport.ensure()``). ``model(pos, species, batch)`` maps
    a batch (``pos [N, 3]`` float64 Å, ``species [N]`` and ``batch [N]``
    int64) to energies ``[B]`` (eV), computed from the ``pos`` it is given
    with autograd enabled; with ``bonds`` ``[E, 2]`` and ``bond_orders`` ``[E]``
    (int64, pass both or neither) it is called as
    ``model(pos, species, batch, bonds=..., bond_orders=...)``, the bonds
    renumbered with the atoms. It is called on rotated (about the origin),
    shifted, permuted, re-ordered and single-molecule batches.

    The checks (``ModelReport.failed`` names them): ``rotation`` (energies
    invariant, forces equivariant), ``translation``, ``permutation`` (atom
    order within a molecule), ``molecule order``, ``isolation`` (molecules do
    not interact), ``forces`` (``F = -dE/dR`` against central differences) and
    ``second order`` (Hessian-vector products against differences of the
    gradient, locally and across short segments: SiLU passes, ReLU does not).

    float64 only (finite differences need its precision); any device.
    ``batch`` needs at least two molecules, ideally of different sizes with
    their atoms interleaved. Cost: about ``4 * 3N`` model evaluations, half
    with a double backward.
    """
    pos = check.tensor("pos", pos)
    if pos.dtype != torch.float64:
        raise TypeError(
            f"`batch pos`: expected dtype torch.float64 (finite differences and the tolerances need it), "
            f"got {pos.dtype}"
        )
    layout = Batch(batch)
    species = check.int64("species", species)
    check.shape("species", species, (layout.num_atoms,), "[N]")
    layout.check_atoms3("pos", pos)
    check.finite("pos", pos)
    if (bonds is None) != (bond_orders is None):
        raise ValueError("`bonds`: pass bonds and bond_orders together")
    bond_pair = None
    if bonds is not None:
        bonds = check.int64("bonds", bonds)
        bond_orders = check.int64("bond_orders", bond_orders)
        if bonds.dim() != 2 or bonds.shape[1] != 2:
            raise ValueError(f"`bonds`: expected shape [E, 2], got {list(bonds.shape)}")
        check.shape("bond_orders", bond_orders, (bonds.shape[0],), "[E]")
        if bonds.numel() and not (0 <= int(bonds.min()) and int(bonds.max()) < layout.num_atoms):
            raise ValueError(f"`bonds`: atom indices must lie in 0..{layout.num_atoms}")
        bond_pair = (bonds, bond_orders)
    if layout.num_molecules < 2:
        raise ValueError("`batch`: the batching checks need at least two molecules")
    mol = _Mol(pos.detach(), species, layout.batch, layout.num_molecules, bond_pair)

    def call(m: _Mol) -> Tensor:
        if m.bonds is None:
            return model(m.pos, m.species, m.batch)
        return model(m.pos, m.species, m.batch, bonds=m.bonds[0], bond_orders=m.bonds[1])

    with torch.enable_grad():
        return ModelReport(_run(call, mol))


def _run(call: Callable[[_Mol], Tensor], mol: _Mol) -> List[Finding]:
    host = _Host(mol)
    reference = _outputs(call, mol)
    findings: List[Finding] = []
    device = mol.pos.device
    rot_t = torch.tensor(_rotation(ROTATION), dtype=torch.float64, device=device).t()
    shift = torch.tensor(TRANSLATION, dtype=torch.float64, device=device)
    b = mol.layout.num_molecules

    cycled = [0] * len(host.batch)
    for atoms in host.members:
        for k, slot in enumerate(atoms):
            cycled[slot] = atoms[(k + 1) % len(atoms)]
    same = list(range(b))
    reversed_atoms = [a for atoms in reversed(host.members) for a in atoms]
    reversed_molecules = list(reversed(same))
    cases = [
        ("rotation", mol.with_pos(mol.pos @ rot_t), (reference[0], reference[1] @ rot_t)),
        ("translation", mol.with_pos(mol.pos + shift), reference),
        ("permutation", host.select(mol, cycled, same), _reorder(reference, cycled, None)),
        (
            "molecule order",
            host.select(mol, reversed_atoms, reversed_molecules),
            _reorder(reference, reversed_atoms, reversed_molecules),
        ),
    ]
    for name, moved, expected in cases:
        got = _outputs(call, moved)
        findings += _compare(name, ("energy (eV)", "forces (eV/Å)"), got, expected, SYMMETRY_ATOL, SYMMETRY_RTOL)
    findings += _isolation(call, mol, host, reference)

    def total(x: Tensor) -> Tensor:
        return call(mol.with_pos(x)).sum(dtype=torch.float64)

    findings.append(
        _gradcheck_finding("forces", "dE/dR vs central differences (eV/Å)", _gradcheck(total, mol.pos))
    )
    findings.append(
        _gradcheck_finding(
            "second order", "Hessian-vector products vs central differences", _gradgradcheck(total, mol.pos)
        )
    )
    findings.append(_segments(total, mol.pos))
    return findings


class _Host:
    """The batch's molecule membership and bonds on the host, for building re-ordered batches."""

    def __init__(self, mol: _Mol) -> None:
        self.batch: List[int] = mol.batch.tolist()
        self.members: List[List[int]] = [[] for _ in range(mol.layout.num_molecules)]
        for atom, m in enumerate(self.batch):
            self.members[m].append(atom)
        self.bonds = None
        if mol.bonds is not None:
            self.bonds = (mol.bonds[0].tolist(), mol.bonds[1].tolist())

    def select(self, mol: _Mol, order: List[int], relabel: List[int]) -> _Mol:
        """The atoms ``order`` of ``mol`` (new atom k is old atom ``order[k]``), old molecule m
        renamed ``relabel[m]``. ``order`` holds whole molecules; bonds among them follow their atoms."""
        device = mol.pos.device
        index = torch.tensor(order, dtype=torch.int64, device=device)
        molecules = [relabel[self.batch[a]] for a in order]
        bonds = None
        if self.bonds is not None:
            new_index = [-1] * len(self.batch)
            for k, old in enumerate(order):
                new_index[old] = k
            pairs, orders = [], []
            # Bonds never join two molecules, so one end tells whether the bond is kept.
            for (i, j), o in zip(*self.bonds):
                if new_index[i] >= 0:
                    pairs.append([new_index[i], new_index[j]])
                    orders.append(o)
            bonds = (
                torch.tensor(pairs, dtype=torch.int64, device=device).reshape(-1, 2),
                torch.tensor(orders, dtype=torch.int64, device=device),
            )
        return _Mol(
            mol.pos.index_select(0, index),
            mol.species.index_select(0, index),
            torch.tensor(molecules, dtype=torch.int64, device=device),
            max(molecules) + 1,
            bonds,
        )


def _outputs(call: Callable[[_Mol], Tensor], mol: _Mol) -> Tuple[Tensor, Tensor]:
    energy, forces = energy_and_forces(lambda x: call(mol.with_pos(x)), mol.pos, mol.layout)
    return energy.detach(), forces.detach()


def _reorder(outputs: Tuple[Tensor, Tensor], order: List[int], relabel: Optional[List[int]]):
    energy, forces = outputs
    device = forces.device
    if relabel is not None:
        inverse = [0] * len(relabel)
        for old, new in enumerate(relabel):
            inverse[new] = old
        energy = energy.index_select(0, torch.tensor(inverse, dtype=torch.int64, device=device))
    return energy, forces.index_select(0, torch.tensor(order, dtype=torch.int64, device=device))


def _difference(name: str, quantity: str, got: Tensor, want: Tensor, atol: float, rtol: float) -> Finding:
    worst = (got - want).abs().max().item()
    scale = want.abs().max().item()
    return Finding(name, quantity, worst, atol + rtol * scale)


def _compare(name, quantities, got, want, atol, rtol) -> List[Finding]:
    return [
        _difference(name, quantities[0], got[0], want[0], atol, rtol),
        _difference(name, quantities[1], got[1], want[1], atol, rtol),
    ]


def _isolation(call, mol: _Mol, host: _Host, reference) -> List[Finding]:
    b = mol.layout.num_molecules
    energies, forces = [], []
    for m, atoms in enumerate(host.members):
        relabel = [-1] * b
        relabel[m] = 0
        alone = _outputs(call, host.select(mol, atoms, relabel))
        energies.append(alone[0])
        forces.append(alone[1])
    order = [a for atoms in host.members for a in atoms]
    expected = _reorder(reference, order, None)
    findings = _compare(
        "isolation",
        ("energy of each molecule alone (eV)", "forces of each molecule alone (eV/Å)"),
        (torch.cat(energies), torch.cat(forces)),
        expected,
        SYMMETRY_ATOL,
        SYMMETRY_RTOL,
    )
    leaf = leaf_copy(mol.pos)
    finite = Finite()
    energy = evaluate(lambda x: call(mol.with_pos(x)), leaf, mol.layout, finite)
    finite.finish()
    leak = 0.0
    for m in range(b):
        (grad,) = torch.autograd.grad(energy[m], leaf, retain_graph=True, allow_unused=True)
        if grad is None:
            continue
        outside = (mol.batch != m).unsqueeze(1)
        largest = (grad * outside).abs().max().item()
        leak = math.nan if math.isnan(largest) else max(leak, largest)
    findings.append(Finding("isolation", "dE_b/dR_i for atoms i outside molecule b (eV/Å)", leak, LEAK))
    return findings


class _Worst(NamedTuple):
    analytic: float
    numeric: float


def _gradcheck(f: Callable[[Tensor], Tensor], x: Tensor) -> Optional[_Worst]:
    """The element of ``df/dx`` furthest outside tolerance against central differences (None if x is empty)."""
    leaf = x.detach().clone().requires_grad_(True)
    out = _scalar(f, leaf)
    (grad,) = torch.autograd.grad(out, leaf, allow_unused=True) if out.requires_grad else (None,)
    analytic = (torch.zeros_like(leaf) if grad is None else grad).reshape(-1).tolist()
    base = x.detach().clone()
    flat = base.reshape(-1).tolist()
    worst, worst_excess = None, -math.inf
    for e, value in enumerate(flat):

        def at(v: float, e: int = e) -> float:
            moved = list(flat)
            moved[e] = v
            args = torch.tensor(moved, dtype=torch.float64, device=x.device).reshape(x.shape)
            return _scalar(f, args).item()

        numeric = (at(value + GRAD_EPS) - at(value - GRAD_EPS)) / (2.0 * GRAD_EPS)
        a = analytic[e]
        excess = abs(a - numeric) - GRAD_RTOL * abs(numeric)
        if excess > worst_excess or not math.isfinite(a):
            worst_excess = excess if math.isfinite(a) else math.inf
            worst = _Worst(a, numeric)
    return worst


def _gradgradcheck(f: Callable[[Tensor], Tensor], x: Tensor) -> Optional[_Worst]:
    weights = torch.arange(x.numel(), dtype=torch.float64, device=x.device).add(1.0).sin().reshape(x.shape)

    def directional(y: Tensor) -> Tensor:
        leaf = y if y.requires_grad else y.detach().requires_grad_(True)
        out = _scalar(f, leaf)
        if not out.requires_grad:
            return torch.zeros((), dtype=torch.float64, device=y.device)
        (g,) = torch.autograd.grad(out, leaf, create_graph=True, allow_unused=True)
        if g is None:
            return torch.zeros((), dtype=torch.float64, device=y.device)
        return torch.zeros((), dtype=torch.float64, device=y.device) + (g * weights).sum(dtype=torch.float64)

    return _gradcheck(directional, x)


def _scalar(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    out = f(x)
    if out.dim() != 0:
        raise ValueError(f"`f output`: expected shape a scalar [], got {list(out.shape)}")
    check.finite("f output", out)
    return out


def _gradcheck_finding(name: str, quantity: str, worst: Optional[_Worst]) -> Finding:
    if worst is None:
        return Finding(name, quantity, 0.0, GRAD_ATOL)
    return Finding(
        name, quantity, abs(worst.analytic - worst.numeric), GRAD_ATOL + GRAD_RTOL * abs(worst.numeric)
    )


def _segments(total: Callable[[Tensor], Tensor], pos: Tensor) -> Finding:
    """The gradient change across short segments against Simpson's rule for the integrated
    Hessian-vector product: autograd's Hessian of a ReLU model misses the gradient's jumps at
    the kinks, which a segment crossing one exposes; a smooth model agrees to O(h^5)."""
    h = SEGMENT
    n = pos.numel()
    changes, integrals = [], []
    for d in range(SEGMENT_DIRECTIONS):
        raw = (
            torch.arange(n, dtype=torch.float64, device=pos.device).add(1.0).mul(0.7 + d).sin().reshape(pos.shape)
        )
        largest = raw.square().sum(dim=1).max().sqrt()
        v = raw / largest
        at = [_gradient_and_hvp(total, pos + v * t, v) for t in (-h, 0.0, h)]
        changes.append(at[2][0] - at[0][0])
        integrals.append((at[0][1] + at[1][1] * 4.0 + at[2][1]) * (h / 3.0))
    return _difference(
        "second order",
        "gradient change across segments vs integrated HVP",
        torch.cat(integrals),
        torch.cat(changes),
        SEGMENT_ATOL,
        SEGMENT_RTOL,
    )


def _gradient_and_hvp(total: Callable[[Tensor], Tensor], x: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
    leaf = leaf_copy(x)
    energy = total(leaf)
    (grad,) = torch.autograd.grad(energy, leaf, create_graph=True)
    (hvp,) = torch.autograd.grad((grad * v).sum(dtype=torch.float64), leaf, allow_unused=True)
    return grad.detach(), torch.zeros_like(leaf) if hvp is None else hvp
