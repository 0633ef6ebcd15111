"""Ragged molecular batches (the PyTorch Geometric convention, no padding).

Atoms of all molecules are stacked: ``pos [N, 3]`` (Å), ``batch [N]`` (int64,
the molecule of each atom, in ``0..B``, any order). Molecule-level tensors are
``[B]``. Losses reduce per molecule first, then over molecules, so a big
molecule does not outweigh a small one.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from . import _checks as check
from ._checks import Finite


class Batch:
    """A validated batch vector: which molecule each atom belongs to.

    ``Batch(batch, num_molecules=None)`` with ``batch`` an int64 tensor ``[N]``
    of molecule indices in ``0..B`` (the PyTorch Geometric ``batch`` vector,
    any order, every molecule with at least one atom). ``num_molecules``
    defaults to ``batch.max() + 1``.

    Every function that takes ``batch`` accepts the tensor itself; build a
    ``Batch`` once per step and pass it instead to validate and count once
    (each tensor call reads the batch to the host). Inside ``torch.compile``
    pass a ``Batch`` built outside the compiled function: validating a tensor
    needs host reads.

    Attributes: ``batch`` ``[N]``, ``num_molecules`` B, ``num_atoms`` N,
    ``counts`` ``[B]`` (int64, atoms per molecule, on the batch's device),
    ``device``. Reductions the losses use, differentiable to any order and
    unchecked (the caller's shapes must fit): ``sum(values)`` and
    ``mean(values)`` per molecule (``[N, ...] -> [B, ...]``),
    ``expand(values)`` to the atoms (``[B, ...] -> [N, ...]``), ``centre(x)``
    (each molecule's centroid removed from ``[N, 3]``). ``to(device)`` moves
    it. Picklable, so it crosses ``DataLoader`` workers.
    """

    __slots__ = ("batch", "num_molecules", "counts", "_counts_float")

    def __init__(self, batch: Tensor, num_molecules: Optional[int] = None) -> None:
        batch = check.int64("batch", batch)
        if batch.dim() != 1 or batch.shape[0] == 0:
            raise ValueError(f"`batch`: expected shape [N] with N >= 1, got {list(batch.shape)}")
        if check.is_compiling():
            raise RuntimeError(
                "`batch`: a batch vector is validated with host reads, which torch.compile cannot trace; "
                "build physcon.Batch(batch) outside the compiled function and pass that"
            )
        low, high = (int(v) for v in torch.stack([batch.min(), batch.max()]).tolist())
        if num_molecules is None:
            num_molecules = max(high, 0) + 1
        if isinstance(num_molecules, bool) or not isinstance(num_molecules, int):
            raise TypeError(f"`num_molecules`: expected an int, got {type(num_molecules).__name__}")
        if num_molecules < 1:
            raise ValueError(f"`num_molecules`: must be at least 1, got {num_molecules}")
        for index in (low, high):
            if not 0 <= index < num_molecules:
                raise ValueError(f"`batch`: index {index} is outside 0..{num_molecules}")
        batch = batch.detach()
        counts = torch.bincount(batch, minlength=num_molecules)
        empty = (counts == 0).nonzero()
        if empty.numel() > 0:
            raise ValueError(
                f"molecule {int(empty[0, 0])} has no atoms (every index in 0..{num_molecules} needs one)"
            )
        self.batch = batch
        self.num_molecules = num_molecules
        self.counts = counts
        # The counts as float dtypes, made once per dtype: every per-molecule mean divides by them.
        self._counts_float: dict = {}

    @property
    def num_atoms(self) -> int:
        return int(self.batch.shape[0])

    @property
    def device(self) -> torch.device:
        return self.batch.device

    def __len__(self) -> int:
        return self.num_molecules

    def __repr__(self) -> str:
        return f"Batch(num_molecules={self.num_molecules}, num_atoms={self.num_atoms}, device={self.device})"

    def __getstate__(self):
        return {"batch": self.batch, "num_molecules": self.num_molecules, "counts": self.counts}

    def __setstate__(self, state) -> None:
        self.batch = state["batch"]
        self.num_molecules = state["num_molecules"]
        self.counts = state["counts"]
        self._counts_float = {}

    def to(self, device: Union[str, torch.device]) -> "Batch":
        """The same batch on another device (no validation repeated)."""
        moved = Batch.__new__(Batch)
        moved.__setstate__(
            {"batch": self.batch.to(device), "num_molecules": self.num_molecules, "counts": self.counts.to(device)}
        )
        return moved

    # ------------------------------------------------------------------
    # Reductions over molecules (no checks: callers checked the shapes)

    def counts_as(self, dtype: torch.dtype, ndim: int = 1) -> Tensor:
        """Atoms per molecule as ``dtype``, shaped to broadcast against ``[B, ...]`` of ``ndim`` dims."""
        if check.is_compiling():
            # No cache while tracing: torch 2.4's dynamo cannot trace a dict read on a slotted attribute.
            counts = self.counts.to(dtype)
        else:
            counts = self._counts_float.get(dtype)
            if counts is None:
                counts = self.counts.to(dtype)
                self._counts_float[dtype] = counts
        if ndim <= 1:
            return counts
        return counts.reshape((self.num_molecules,) + (1,) * (ndim - 1))

    def sum(self, values: Tensor) -> Tensor:
        """Per-molecule sum ``[N, ...] -> [B, ...]``, differentiable to any order."""
        zeros = values.new_zeros((self.num_molecules,) + tuple(values.shape[1:]))
        return zeros.index_add(0, self.batch, values)

    def mean(self, values: Tensor) -> Tensor:
        """Per-molecule mean ``[N, ...] -> [B, ...]``."""
        return self.sum(values) / self.counts_as(values.dtype, values.dim())

    def expand(self, values: Tensor) -> Tensor:
        """Molecule values to their atoms ``[B, ...] -> [N, ...]``."""
        return values.index_select(0, self.batch)

    def centre(self, x: Tensor) -> Tensor:
        """Removes each molecule's centroid from ``[N, 3]`` coordinates."""
        return x - self.expand(self.mean(x))

    # ------------------------------------------------------------------
    # Argument checks against this batch

    def check_atoms3(self, arg: str, t: object, finite: Optional[Finite] = None) -> Tensor:
        """A float ``[N, 3]`` tensor on the batch's device (finiteness queued in ``finite``)."""
        t = check.float_tensor(arg, t)
        n = self.num_atoms
        if t.dim() == 2 and t.shape[1] == 3 and t.shape[0] != n:
            # The tensor is well formed: the batch vector may be the one at fault.
            raise ValueError(
                f"`{arg}` has {t.shape[0]} atoms ([{t.shape[0]}, 3]) but `batch` has {n}: "
                f"`batch` must give the molecule of every atom of `{arg}`"
            )
        check.shape(arg, t, (n, 3), "[N, 3]")
        check.on_device(arg, t, self.device)
        if finite is not None:
            finite.add(arg, t)
        return t

    def check_molecules(self, arg: str, t: object, finite: Optional[Finite] = None) -> Tensor:
        """A float ``[B]`` tensor on the batch's device (finiteness queued in ``finite``)."""
        t = check.float_tensor(arg, t)
        b = self.num_molecules
        if t.dim() == 1 and t.shape[0] != b:
            raise ValueError(
                f"`{arg}`: expected shape [B] = [{b}] (one value per molecule; `batch` has {b} molecules), "
                f"got {list(t.shape)}"
            )
        check.shape(arg, t, (b,), "[B]")
        check.on_device(arg, t, self.device)
        if finite is not None:
            finite.add(arg, t)
        return t

    def check_mask(self, arg: str, mask: object) -> Tensor:
        mask = check.tensor(arg, mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"`{arg}`: expected dtype torch.bool, got {mask.dtype}")
        check.on_device(arg, mask, self.device)
        b = self.num_molecules
        if tuple(mask.shape) != (b,):
            raise ValueError(
                f"`{arg}`: expected shape [B] = [{b}] (one flag per molecule), got {list(mask.shape)}"
            )
        return mask


BatchLike = Union[Tensor, Batch]


def as_batch(batch: object) -> Batch:
    """``batch`` as a loss takes it: a ``physcon.Batch`` or the int64 tensor itself."""
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, Tensor):
        return Batch(batch)
    raise TypeError(
        f"`batch`: expected a torch.Tensor [N] (int64) or a physcon.Batch, got {type(batch).__name__}"
    )
