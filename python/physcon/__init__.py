"""physcon: physical-consistency losses for molecular ML, in plain PyTorch.

Optimality consistency (an equilibrium structure is a minimum of the energy)
and score consistency (the small-noise score is F / kT), beside the energy,
force and denoising losses, as ``torch.nn.Module`` losses over ragged batches:
``pos [N, 3]`` (Å), ``batch [N]`` (int64 molecule index), molecule values
``[B]``. Units: Å, eV, eV/Å, K.

Every loss is built once with validated settings (keyword arguments) and
called per batch: ``loss(...)`` returns the scalar tensor,
``loss.per_molecule(...)`` a ``PerMolecule`` with ``.values [B]``, ``.mask``
and ``.weighted_mean(weights)``. An energy model is any callable
``pos -> [B]`` energies (an ``nn.Module``, or a lambda closing over species
and batch). The losses are part of the caller's autograd graph:
``loss.backward()`` reaches the model's parameters, double backward included.

The Rust crate ``physcon`` (on tch/libtorch) is the reference implementation:
CI computes every loss, flow and helper with both and holds them equal.
"""

from ._batch import Batch
from ._energy import energy_and_forces, forces
from .diffusion import NoiseLevel, Noised, NoiseSchedule, com_free_noise, q_sample
from .losses import (
    DenoisingLoss,
    EnergyDescentLoss,
    EnergyLoss,
    ForceLoss,
    GradientFlow,
    PerMolecule,
    ScoreConsistency,
    StationarityLoss,
    score_target,
)
from .metrics import energy_gap, energy_mae, kabsch_rmsd
from .testing import ModelReport, check_energy_model
from .units import KB_EV_PER_K, kelvin_to_kt

__version__ = "0.2.0"

__all__ = [
    "KB_EV_PER_K",
    "Batch",
    "DenoisingLoss",
    "EnergyDescentLoss",
    "EnergyLoss",
    "ForceLoss",
    "GradientFlow",
    "ModelReport",
    "NoiseLevel",
    "Noised",
    "NoiseSchedule",
    "PerMolecule",
    "ScoreConsistency",
    "StationarityLoss",
    "check_energy_model",
    "com_free_noise",
    "energy_and_forces",
    "energy_gap",
    "energy_mae",
    "forces",
    "kabsch_rmsd",
    "kelvin_to_kt",
    "q_sample",
    "score_target",
]
