"""Type stubs of the native module ``physcon._physcon``.

The signatures are checked against the module's own (``__text_signature__``)
by ``tests/test_stubs.py``; the full docstrings (formula, units, shapes) are
on the runtime objects: ``help(physcon.ScoreConsistency)``.
"""

from typing import Callable, Literal, Optional, Tuple, Union

import torch
from torch import Tensor

KB_EV_PER_K: float

EnergyFn = Callable[[Tensor], Tensor]
"""An energy model: positions ``[N, 3]`` (Å) to molecule energies ``[B]`` (eV)."""

Checks = Literal["full", "metadata"]
Flow = Union["GradientFlow", Literal["to_structure", "both", "to_energy"]]

class Batch:
    """A validated batch vector ``[N]`` (int64 molecule index of each atom)."""

    def __init__(self, batch: Tensor, num_molecules: Optional[int] = None) -> None: ...
    @property
    def batch(self) -> Tensor: ...
    @property
    def num_molecules(self) -> int: ...
    @property
    def num_atoms(self) -> int: ...
    @property
    def counts(self) -> Tensor: ...
    def __len__(self) -> int: ...

BatchLike = Union[Tensor, Batch]

class GradientFlow:
    """Which model a consistency loss trains."""

    TO_STRUCTURE: "GradientFlow"
    BOTH: "GradientFlow"
    TO_ENERGY: "GradientFlow"
    def __int__(self) -> int: ...

class PerMolecule:
    """A loss's values ``[B]`` before the reduction over molecules."""

    @property
    def values(self) -> Tensor: ...
    @property
    def mask(self) -> Optional[Tensor]: ...
    def mean(self) -> Tensor: ...
    def weighted_mean(self, weights: Tensor) -> Tensor: ...
    def __len__(self) -> int: ...

class EnergyLoss:
    """``l((E_pred - E_ref)_b [/ n_b])`` per molecule, mean over labelled molecules."""

    def __init__(
        self,
        metric: Literal["mse", "l1", "huber"] = "mse",
        *,
        delta: float = 1.0,
        per_atom: bool = False,
        checks: Checks = "full",
    ) -> None: ...
    @property
    def metric(self) -> str: ...
    def __call__(
        self, pred: Tensor, target: Tensor, batch: BatchLike, mask: Optional[Tensor] = None
    ) -> Tensor: ...
    def per_molecule(
        self, pred: Tensor, target: Tensor, batch: BatchLike, mask: Optional[Tensor] = None
    ) -> PerMolecule: ...

class ForceLoss:
    """``(1/3n_b) sum_i ||F_pred,i - F_ref,i||^2`` per molecule (eV²/Å²)."""

    def __init__(self, *, checks: Checks = "full") -> None: ...
    def __call__(
        self, pred: Tensor, target: Tensor, batch: BatchLike, mask: Optional[Tensor] = None
    ) -> Tensor: ...
    def per_molecule(
        self, pred: Tensor, target: Tensor, batch: BatchLike, mask: Optional[Tensor] = None
    ) -> PerMolecule: ...

class DenoisingLoss:
    """``(1/n_b) sum_i ||eps_hat_i - eps_i||^2`` per molecule."""

    def __init__(self, *, checks: Checks = "full") -> None: ...
    def __call__(self, eps_hat: Tensor, eps: Tensor, batch: BatchLike) -> Tensor: ...
    def per_molecule(self, eps_hat: Tensor, eps: Tensor, batch: BatchLike) -> PerMolecule: ...

class StationarityLoss:
    """``(1/n_b) sum_i ||dE(R_hat)/dR_hat_i||^2`` per molecule (eV²/Å²)."""

    def __init__(self, *, flow: Optional[Flow] = None, checks: Checks = "full") -> None: ...
    @property
    def flow(self) -> GradientFlow: ...
    def __call__(self, energy: EnergyFn, structure: Tensor, batch: BatchLike) -> Tensor: ...
    def per_molecule(self, energy: EnergyFn, structure: Tensor, batch: BatchLike) -> PerMolecule: ...

class EnergyDescentLoss:
    """``(E(R_hat_b) - sg E(R_ref,b)) / n_b`` per molecule (eV/atom)."""

    def __init__(self, *, flow: Optional[Flow] = None, checks: Checks = "full") -> None: ...
    @property
    def flow(self) -> GradientFlow: ...
    def __call__(
        self, energy: EnergyFn, structure: Tensor, reference: Tensor, batch: BatchLike
    ) -> Tensor: ...
    def per_molecule(
        self, energy: EnergyFn, structure: Tensor, reference: Tensor, batch: BatchLike
    ) -> PerMolecule: ...

class ScoreConsistency:
    """``(1/n_b) sum_i ||eps_hat_i - eps*_i||^2``, ``eps* = -(s/a) F/kT``."""

    def __init__(self, kt: float, *, flow: Optional[Flow] = None, checks: Checks = "full") -> None: ...
    @property
    def kt(self) -> float: ...
    @property
    def flow(self) -> GradientFlow: ...
    def __call__(
        self,
        eps_hat: Tensor,
        level: NoiseLevel,
        batch: BatchLike,
        *,
        energy: Optional[EnergyFn] = None,
        clean: Optional[Tensor] = None,
        forces: Optional[Tensor] = None,
    ) -> Tensor: ...
    def per_molecule(
        self,
        eps_hat: Tensor,
        level: NoiseLevel,
        batch: BatchLike,
        *,
        energy: Optional[EnergyFn] = None,
        clean: Optional[Tensor] = None,
        forces: Optional[Tensor] = None,
    ) -> PerMolecule: ...

class NoiseLevel:
    """Per-molecule ``R_t = alpha R_0 + sigma eps``: ``alpha``, ``sigma`` ``[B]``."""

    def __init__(self, alpha: Tensor, sigma: Tensor) -> None: ...
    @staticmethod
    def sigma_only(sigma: Tensor) -> NoiseLevel: ...
    @property
    def alpha(self) -> Tensor: ...
    @property
    def sigma(self) -> Tensor: ...
    @property
    def t(self) -> Optional[Tensor]: ...

class NoiseSchedule:
    """A variance-preserving schedule ``R_t = a_t R_0 + s_t eps``, ``t`` in ``1..=T``."""

    def __init__(
        self,
        kind: Literal["cosine", "linear"] = "cosine",
        steps: int = 1000,
        *,
        s: float = 0.008,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> None: ...
    @property
    def steps(self) -> int: ...
    def alpha_bar(self, t: int) -> float: ...
    def alpha(self, t: int) -> float: ...
    def sigma(self, t: int) -> float: ...
    def level(self, t: Tensor, dtype: Optional[torch.dtype] = None) -> NoiseLevel: ...

class Noised:
    """A noised structure: ``x0`` (centred), ``x_t``, ``eps`` ``[N, 3]`` and its ``level``."""

    @property
    def x0(self) -> Tensor: ...
    @property
    def x_t(self) -> Tensor: ...
    @property
    def eps(self) -> Tensor: ...
    @property
    def level(self) -> NoiseLevel: ...

def q_sample(
    schedule: NoiseSchedule, x0: Tensor, t: Tensor, batch: BatchLike, *, eps: Optional[Tensor] = None
) -> Noised: ...

class ModelReport:
    """The findings of ``check_energy_model``."""

    @property
    def passed(self) -> bool: ...
    @property
    def failed(self) -> list[str]: ...
    @property
    def findings(self) -> list[Tuple[str, str, float, float, bool]]: ...
    def ensure(self) -> ModelReport: ...

def energy_and_forces(
    model: EnergyFn, pos: Tensor, batch: BatchLike, *, create_graph: bool = False
) -> Tuple[Tensor, Tensor]: ...
def kabsch_rmsd(pred: Tensor, reference: Tensor, batch: BatchLike) -> Tensor: ...
def energy_gap(energy: EnergyFn, pred: Tensor, reference: Tensor, batch: BatchLike) -> Tensor: ...
def energy_mae(
    pred: Tensor, target: Tensor, batch: BatchLike, mask: Optional[Tensor] = None
) -> Tensor: ...
def kelvin_to_kt(kelvin: float) -> float: ...
def check_energy_model(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    pos: Tensor,
    species: Tensor,
    batch: Tensor,
    *,
    bonds: Optional[Tensor] = None,
    bond_orders: Optional[Tensor] = None,
) -> ModelReport: ...
