"""physcon: physical-consistency losses for molecular ML on PyTorch.

Optimality consistency (an equilibrium structure is a minimum of the energy)
and score consistency (the small-noise score is F / kT), beside the energy,
force and denoising losses, as PyTorch losses over ragged batches:
``pos [N, 3]`` (Å), ``batch [N]`` (int64 molecule index), molecule values
``[B]``. Units: Å, eV, eV/Å, K.

Every loss is built once with validated settings (keyword arguments) and
called per batch: ``loss(...)`` returns the scalar tensor,
``loss.per_molecule(...)`` a ``PerMolecule`` with ``.values [B]``, ``.mask``
and ``.weighted_mean(weights)``. An energy model is any callable
``pos -> [B]`` energies (an ``nn.Module``, or a lambda closing over species
and batch). The losses are part of the caller's autograd graph:
``loss.backward()`` reaches the model's parameters, double backward included.
"""

import torch as _torch

# The native module links the libtorch of exactly this torch release. Any
# other torch in the process would make it call into a different C++ ABI and
# crash, so the version is checked before the native module is loaded.
TORCH_VERSION = "2.11.0"

_found = _torch.__version__.split("+")[0]
if _found != TORCH_VERSION:
    raise ImportError(
        f"physcon was built for torch {TORCH_VERSION} but torch {_torch.__version__} is "
        f"installed; install torch=={TORCH_VERSION} (or rebuild physcon against torch {_found})"
    )

from ._physcon import (  # noqa: E402  (after the version check, on purpose)
    KB_EV_PER_K,
    Batch,
    DenoisingLoss,
    EnergyDescentLoss,
    EnergyLoss,
    ForceLoss,
    GradientFlow,
    ModelReport,
    NoiseLevel,
    Noised,
    NoiseSchedule,
    PerMolecule,
    ScoreConsistency,
    StationarityLoss,
    check_energy_model,
    energy_and_forces,
    energy_gap,
    energy_mae,
    kabsch_rmsd,
    kelvin_to_kt,
    q_sample,
)

__version__ = "0.1.0"

__all__ = [
    "KB_EV_PER_K",
    "TORCH_VERSION",
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
    "energy_and_forces",
    "energy_gap",
    "energy_mae",
    "kabsch_rmsd",
    "kelvin_to_kt",
    "q_sample",
]
