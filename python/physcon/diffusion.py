"""Noise levels for score consistency, and a variance-preserving coordinate diffusion.

``R_t = a R_0 + s eps`` per molecule. Score consistency needs the level
``(a, s)`` a noised structure was made with: from the user's own diffusion
(``NoiseLevel(alpha, sigma)``, ``NoiseLevel.sigma_only(sigma)`` for EDM-style
variance-exploding noise) or from physcon's schedule (``NoiseSchedule`` and
``q_sample``, which noise with centre-of-mass-free ``eps``).
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import Tensor

from . import _checks as check
from ._batch import Batch, BatchLike, as_batch


def _one_per_molecule(arg: str, t: Tensor) -> None:
    if t.dim() != 1 or t.shape[0] == 0:
        raise ValueError(f"`{arg}`: expected shape [B] with B >= 1, got {list(t.shape)}")


class NoiseLevel:
    """The noise level of each molecule: ``R_t = alpha R_0 + sigma eps``.

    ``NoiseLevel(alpha, sigma)``: signal and noise scales ``[B]`` (one float
    dtype and device, every value positive and finite) of the user's own
    diffusion. Nothing assumes ``alpha² + sigma² = 1``: variance-preserving,
    variance-exploding and any other scaling are exact.
    ``NoiseLevel.sigma_only(sigma)``: a variance-exploding (EDM-style)
    ``R_sigma = R_0 + sigma eps``, which is ``alpha = 1``.

    The scales are constants (detached). ``t`` ``[B]`` (int64) is set when a
    ``NoiseSchedule`` made the level. Picklable.
    """

    __slots__ = ("alpha", "sigma", "t", "_made_from")

    def __init__(self, alpha: Tensor, sigma: Tensor) -> None:
        alpha = check.float_tensor("alpha", alpha)
        _one_per_molecule("alpha", alpha)
        sigma = check.float_tensor("sigma", sigma)
        check.same_dtype("sigma", sigma, alpha.dtype)
        check.shape("sigma", sigma, tuple(alpha.shape), "[B], as alpha")
        check.on_device("sigma", sigma, alpha.device, of="`alpha`")
        alpha, sigma = alpha.detach(), sigma.detach()
        if not check.is_compiling():
            a_low, s_low, a_high, s_high = check.host_floats([alpha.min(), sigma.min(), alpha.max(), sigma.max()])
            for arg, low, high in (("alpha", a_low, a_high), ("sigma", s_low, s_high)):
                if not (low > 0.0 and math.isfinite(high)):
                    raise ValueError(
                        f"`{arg}`: every value must be positive and finite (range {low} to {high})"
                    )
        self.alpha = alpha
        self.sigma = sigma
        self.t: Optional[Tensor] = None
        self._made_from = "NoiseLevel(alpha, sigma)"

    @staticmethod
    def sigma_only(sigma: Tensor) -> "NoiseLevel":
        """A variance-exploding (sigma-only) level: ``R_sigma = R_0 + sigma eps``, ``alpha = 1``."""
        sigma = check.float_tensor("sigma", sigma)
        level = NoiseLevel(torch.ones_like(sigma), sigma)
        level._made_from = "NoiseLevel.sigma_only(sigma)"
        return level

    def __getstate__(self):
        return {"alpha": self.alpha, "sigma": self.sigma, "t": self.t, "_made_from": self._made_from}

    def __setstate__(self, state) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"NoiseLevel(num_molecules={self.alpha.shape[0]}, dtype={self.alpha.dtype})"

    def to(self, device) -> "NoiseLevel":
        """The same level on another device."""
        moved = NoiseLevel.__new__(NoiseLevel)
        t = None if self.t is None else self.t.to(device)
        moved.__setstate__(
            {"alpha": self.alpha.to(device), "sigma": self.sigma.to(device), "t": t, "_made_from": self._made_from}
        )
        return moved

    def check(self, b: Batch, dtype: torch.dtype) -> None:
        """The level fits the batch and the dtype of the coordinates it scales (metadata only)."""
        n_mol = b.num_molecules
        if self.sigma.dim() == 1 and self.sigma.shape[0] != n_mol:
            per_atom = " (one per atom?)" if self.sigma.shape[0] == b.num_atoms else ""
            raise ValueError(
                f"`level`: it holds {self.sigma.shape[0]} values{per_atom} but `batch` has {n_mol} molecules; "
                f"a NoiseLevel takes one value per molecule [B] ({self._made_from} with sigma [B])"
            )
        for arg, t in (("level.alpha", self.alpha), ("level.sigma", self.sigma)):
            check.on_device(arg, t, b.device)
            check.same_dtype(arg, t, dtype)

    def alpha_atoms(self, b: Batch) -> Tensor:
        return b.expand(self.alpha).unsqueeze(1)

    def sigma_atoms(self, b: Batch) -> Tensor:
        return b.expand(self.sigma).unsqueeze(1)


class NoiseSchedule:
    """A variance-preserving schedule: ``R_t = a_t R_0 + s_t eps``, ``a_t = sqrt(abar_t)``,
    ``s_t = sqrt(1 - abar_t)``, for ``t`` in ``1..=T``, with ``abar_0 = 1``.

    ``NoiseSchedule("cosine", steps=1000, *, s=0.008)``: Nichol & Dhariwal
    (2021), ``abar(t) = f(t)/f(0)``, ``f(t) = cos²((t/T + s)/(1 + s) π/2)``,
    each ``beta_t`` clipped at 0.999.
    ``NoiseSchedule("linear", steps=1000, *, beta_start=1e-4, beta_end=0.02)``:
    Ho et al. (2020), ``beta_t`` linear from ``beta_start`` to ``beta_end``.

    ``schedule.level(t, dtype=torch.float32)`` gives the ``NoiseLevel`` of
    steps ``t`` ``[B]`` (int64 in ``1..=T``); ``alpha_bar(t)``, ``alpha(t)``,
    ``sigma(t)`` for one step. Immutable and picklable.
    """

    __slots__ = ("kind", "s", "beta_start", "beta_end", "_alpha_bar")

    def __init__(
        self,
        kind: str = "cosine",
        steps: int = 1000,
        *,
        s: float = 0.008,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> None:
        if kind not in ("cosine", "linear"):
            raise ValueError(f"`kind`: expected 'cosine' or 'linear', got {kind!r}")
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(f"`steps`: expected an int, got {type(steps).__name__}")
        if steps < 1:
            raise ValueError(f"`steps`: must be at least 1, got {steps}")
        n = steps
        if kind == "cosine":
            s = float(s)
            if not (math.isfinite(s) and s >= 0.0):
                raise ValueError(f"`s`: must be finite and >= 0, got {s}")

            def f(t: int) -> float:
                c = math.cos((t / n + s) / (1.0 + s) * (math.pi / 2))
                return c * c

            betas = [min(max(1.0 - f(t) / f(t - 1), 0.0), 0.999) for t in range(1, n + 1)]
        else:
            beta_start, beta_end = float(beta_start), float(beta_end)

            def ok(v: float) -> bool:
                return math.isfinite(v) and 0.0 < v < 1.0

            if not (ok(beta_start) and ok(beta_end) and beta_start <= beta_end):
                raise ValueError(
                    f"`beta`: need 0 < beta_start <= beta_end < 1, got {beta_start}..{beta_end}"
                )
            betas = [beta_start + (0.0 if n == 1 else k / (n - 1)) * (beta_end - beta_start) for k in range(n)]
        alpha_bar: List[float] = [1.0]
        for beta in betas:
            alpha_bar.append(alpha_bar[-1] * (1.0 - beta))
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "s", float(s))
        object.__setattr__(self, "beta_start", float(beta_start))
        object.__setattr__(self, "beta_end", float(beta_end))
        object.__setattr__(self, "_alpha_bar", tuple(alpha_bar))

    def __setattr__(self, name, value):
        raise AttributeError("NoiseSchedule is immutable")

    def __getstate__(self):
        return (self.kind, self.steps, self.s, self.beta_start, self.beta_end)

    def __setstate__(self, state) -> None:
        kind, steps, s, beta_start, beta_end = state
        NoiseSchedule.__init__(self, kind, steps, s=s, beta_start=beta_start, beta_end=beta_end)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoiseSchedule) and self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash(self.__getstate__())

    @property
    def steps(self) -> int:
        """The number of steps T."""
        return len(self._alpha_bar) - 1

    def alpha_bar(self, t: int) -> float:
        """``abar_t`` for ``t`` in ``0..=T`` (``abar_0 = 1``)."""
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"`t`: expected an int, got {type(t).__name__}")
        if not 0 <= t <= self.steps:
            raise ValueError(f"`t`: index {t} is outside 0..{self.steps + 1}")
        return self._alpha_bar[t]

    def alpha(self, t: int) -> float:
        """``a_t = sqrt(abar_t)``, the signal scale."""
        return math.sqrt(self.alpha_bar(t))

    def sigma(self, t: int) -> float:
        """``s_t = sqrt(1 - abar_t)``, the noise scale."""
        return math.sqrt(1.0 - self.alpha_bar(t))

    def level(self, t: Tensor, dtype: Optional[torch.dtype] = None) -> NoiseLevel:
        """The ``NoiseLevel`` of steps ``t`` ``[B]`` (int64 in ``1..=T``), as ``dtype``
        (default float32) on ``t``'s device."""
        t = check.int64("t", t)
        dtype = torch.float32 if dtype is None else check.float_dtype("dtype", dtype)
        _one_per_molecule("t", t)
        if not check.is_compiling():
            for index in (int(v) for v in torch.stack([t.min(), t.max()]).tolist()):
                if not 1 <= index <= self.steps:
                    raise ValueError(f"`t`: index {index} is outside 1..{self.steps + 1}")
        table = torch.tensor(self._alpha_bar, dtype=torch.float64, device=t.device)
        abar = table.index_select(0, t)
        level = NoiseLevel.__new__(NoiseLevel)
        level.__setstate__(
            {
                "alpha": abar.sqrt().to(dtype),
                "sigma": (1.0 - abar).sqrt().to(dtype),
                "t": t.detach(),
                "_made_from": "NoiseSchedule.level(t)",
            }
        )
        return level

    def __repr__(self) -> str:
        if self.kind == "cosine":
            return f"NoiseSchedule('cosine', steps={self.steps}, s={self.s})"
        return f"NoiseSchedule('linear', steps={self.steps}, beta_start={self.beta_start}, beta_end={self.beta_end})"


class Noised:
    """A noised structure: ``x0`` (centred), ``x_t``, ``eps`` ``[N, 3]`` and its ``level``."""

    __slots__ = ("x0", "x_t", "eps", "level")

    def __init__(self, x0: Tensor, x_t: Tensor, eps: Tensor, level: NoiseLevel) -> None:
        self.x0, self.x_t, self.eps, self.level = x0, x_t, eps, level

    def __getstate__(self):
        return (self.x0, self.x_t, self.eps, self.level)

    def __setstate__(self, state) -> None:
        self.x0, self.x_t, self.eps, self.level = state

    def __repr__(self) -> str:
        return f"Noised(num_atoms={self.x0.shape[0]}, level={self.level!r})"


def com_free_noise(batch: BatchLike, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise ``[N, 3]`` projected per molecule to zero centroid,
    drawn from torch's global generator (``torch.manual_seed``)."""
    b = as_batch(batch)
    dtype = check.float_dtype("dtype", dtype)
    return b.centre(torch.randn(b.num_atoms, 3, dtype=dtype, device=b.device))


def q_sample(
    schedule: NoiseSchedule, x0: Tensor, t: Tensor, batch: BatchLike, *, eps: Optional[Tensor] = None
) -> Noised:
    """Noises a clean structure at steps ``t`` ``[B]``: ``R_t = a_t centre(R_0) + s_t eps``.

    ``eps`` ``[N, 3]`` is the given noise (projected to zero centroid per
    molecule), else drawn from torch's global generator (``torch.manual_seed``).
    Returns a ``Noised`` (``.x0``, ``.x_t``, ``.eps``, ``.level``); the result
    keeps the graph to ``x0``.
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"`schedule`: expected a physcon.NoiseSchedule, got {type(schedule).__name__}")
    b = as_batch(batch)
    x0 = b.check_atoms3("x0", x0)
    check.finite("x0", x0)
    if eps is None:
        eps = com_free_noise(b, x0.dtype)
    else:
        b.check_atoms3("eps", eps)
        check.finite("eps", eps)
        check.same_dtype("eps", eps, x0.dtype)
        eps = b.centre(eps)
    t = check.int64("t", t)
    check.on_device("t", t, b.device)
    level = schedule.level(t, x0.dtype)
    if tuple(t.shape) != (b.num_molecules,):
        raise ValueError(
            f"`t`: expected shape [B] = [{b.num_molecules}] (one step per molecule), got {list(t.shape)}"
        )
    x0 = b.centre(x0)
    x_t = x0 * level.alpha_atoms(b) + eps * level.sigma_atoms(b)
    return Noised(x0, x_t, eps, level)
