"""Argument checks shared by the public functions.

Every check raises the exception a PyTorch user expects (``TypeError`` for a
wrong type or dtype, ``ValueError`` for a wrong shape, device or value) with a
message that names the argument at fault, in the words of the Rust crate's
errors (``physcon::Error``), so a trainer's log says which tensor was wrong.
"""

from __future__ import annotations

import math

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def is_compiling() -> bool:
    """True while ``torch.compile`` traces: no host read may happen then."""
    compiler = getattr(torch, "compiler", None)
    check = getattr(compiler, "is_compiling", None)
    if check is None:  # torch < 2.3
        return bool(torch._dynamo.is_compiling())
    return bool(check())


def tensor(arg: str, t: object, what: str = "a torch.Tensor") -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"`{arg}`: expected {what}, got {type(t).__name__}")
    return t


def float_tensor(arg: str, t: object) -> Tensor:
    t = tensor(arg, t)
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"`{arg}`: expected dtype a floating-point dtype (float16, bfloat16, float32, float64), got {t.dtype}"
        )
    return t


def float_dtype(arg: str, dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or dtype not in FLOAT_DTYPES:
        raise TypeError(f"`{arg}`: expected a floating-point torch.dtype, got {dtype}")
    return dtype


def int64(arg: str, t: object) -> Tensor:
    t = tensor(arg, t)
    if t.dtype != torch.int64:
        raise TypeError(f"`{arg}`: expected dtype torch.int64, got {t.dtype}")
    return t


def same_dtype(arg: str, t: Tensor, dtype: torch.dtype) -> None:
    if t.dtype != dtype:
        raise TypeError(f"`{arg}`: expected dtype {dtype} (the dtype of the other inputs), got {t.dtype}")


def on_device(arg: str, t: Tensor, device: torch.device, of: str = "the batch") -> None:
    if t.device != device:
        raise ValueError(f"`{arg}` is on {t.device} but {of} is on {device}")


def shape(arg: str, t: Tensor, expected: Sequence[int], words: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"`{arg}`: expected shape {words} = {list(expected)}, got {list(t.shape)}")


def positive(arg: str, value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"`{arg}`: expected a number, got {type(value).__name__}") from None
    if not (v > 0.0 and v < float("inf")):
        raise ValueError(f"`{arg}` must be positive and finite, got {value}")
    return v


def host_floats(scalars: List[Tensor]) -> List[float]:
    """Scalars reduced on the device, read to the host in one transfer (one
    synchronisation on CUDA however many there are), as Python floats."""
    return torch.stack([s.detach().to(torch.float64) for s in scalars]).tolist()


def finite(arg: str, t: Tensor) -> None:
    """Raises unless every value of ``t`` is finite (one host read)."""
    if t.numel() == 0 or is_compiling():
        return
    t = t.detach()
    # A finite sum clears the usual case with one reduction; the exact test is
    # kept for a non-finite sum (a bad element, or finite elements that overflow).
    total = t.sum(dtype=t.dtype).item()
    if not math.isfinite(total) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"`{arg}` contains NaN or infinite values")


class Finite:
    """Finiteness checks collected over one call and settled with one host read.

    Arguments are reported in the order they were added, so an input is named
    before any output computed from it. ``enabled=False`` (a loss built with
    ``checks="metadata"``) drops everything; inside ``torch.compile`` the
    checks are skipped too (a host read would break the graph).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.pending: Optional[List[Tuple[str, Tensor]]] = [] if enabled and not is_compiling() else None

    def add(self, arg: str, t: Tensor) -> None:
        if self.pending is not None and t.numel() > 0:
            self.pending.append((arg, t))

    def finish(self) -> None:
        if not self.pending:
            return
        # Values only: no graph for the reductions (cheaper than a detach per tensor).
        with torch.no_grad():
            self._settle()
        self.pending = []

    def _settle(self) -> None:
        assert self.pending is not None
        if len(self.pending) == 1:
            finite(*self.pending[0])
            return
        tensors = [t for _, t in self.pending]
        if all(t.dtype == tensors[0].dtype and t.device == tensors[0].device for t in tensors):
            # One reduction over every value: finite whenever each value is (a non-finite
            # sum, or finite values that overflow, goes to the exact test per argument).
            total = torch.cat([t.reshape(-1) for t in tensors]).sum().item()
            if math.isfinite(total):
                return
            sums = [math.nan] * len(tensors)
        else:
            # Each sum in its own dtype, so that a float16 sum overflows as float16 would.
            sums = host_floats([t.sum(dtype=t.dtype) for t in tensors])
        for (arg, t), total in zip(self.pending, sums):
            if not math.isfinite(total):
                finite(arg, t)
