"""NoiseSchedule and q_sample against the documented formulas."""

import math

import pytest
import torch

import physcon
import reference as ref
from conftest import assert_close


def cosine_alpha_bar(steps, s=0.008):
    """``abar_t = prod_{k<=t} (1 - beta_k)``, ``beta_k = 1 - f(k)/f(k-1)`` clipped to [0, 0.999],
    ``f(t) = cos²((t/T + s)/(1 + s) π/2)``."""
    f = lambda t: math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    out = [1.0]
    for t in range(1, steps + 1):
        out.append(out[-1] * (1 - min(max(1 - f(t) / f(t - 1), 0.0), 0.999)))
    return out


def test_cosine_and_linear_schedules():
    schedule = physcon.NoiseSchedule("cosine", steps=50)
    want = cosine_alpha_bar(50)
    for t in [0, 1, 7, 50]:
        assert abs(schedule.alpha_bar(t) - want[t]) <= 1e-14
        assert abs(schedule.alpha(t) - math.sqrt(want[t])) <= 1e-14
        assert abs(schedule.sigma(t) - math.sqrt(1 - want[t])) <= 1e-14
    linear = physcon.NoiseSchedule("linear", steps=3, beta_start=0.1, beta_end=0.3)
    assert abs(linear.alpha_bar(3) - 0.9 * 0.8 * 0.7) <= 1e-15
    assert repr(schedule) == "NoiseSchedule('cosine', steps=50, s=0.008)"
    assert schedule.steps == 50
    with pytest.raises(ValueError, match="`t`: index 51 is outside"):
        schedule.alpha_bar(51)
    with pytest.raises(ValueError, match="`kind`"):
        physcon.NoiseSchedule("square")


def test_q_sample_with_given_noise(mol64):
    m = mol64
    schedule = physcon.NoiseSchedule("cosine", steps=100)
    t = torch.tensor([1, 5, 30])
    x0 = m.pos.clone().requires_grad_(True)
    noised = physcon.q_sample(schedule, x0, t, m.batch, eps=m.eps)
    abar = torch.tensor([schedule.alpha_bar(k) for k in t.tolist()], dtype=torch.float64)
    level = noised.level
    assert torch.equal(level.t, t)
    assert_close(level.alpha, abar.sqrt(), 1e-15, "alpha")
    assert_close(level.sigma, (1 - abar).sqrt(), 1e-15, "sigma")
    x0c, epsc = ref.centre(x0, m.batch, 3), ref.centre(m.eps, m.batch, 3)
    want = abar.sqrt()[m.batch, None] * x0c + (1 - abar).sqrt()[m.batch, None] * epsc
    assert_close(noised.x0, x0c, 1e-14, "x0")
    assert_close(noised.eps, epsc, 1e-14, "eps")
    assert_close(noised.x_t, want, 1e-14, "x_t")
    # The graph to the clean structure is kept.
    (g,) = torch.autograd.grad((noised.x_t * m.forces).sum(), x0)  # (a plain sum of centred x is constant)
    assert g.abs().sum() > 0
    # A level made here feeds score consistency like the user's own.
    eps_hat = m.eps.clone().requires_grad_(True)
    physcon.ScoreConsistency(0.1)(eps_hat, level, m.batch, energy=m.energy, clean=noised.x0).backward()
    assert eps_hat.grad.abs().sum() > 0


def test_q_sample_draws_centred_noise_from_the_global_generator(mol64):
    m = mol64
    schedule = physcon.NoiseSchedule()
    t = torch.tensor([1, 2, 3])
    torch.manual_seed(5)
    a = physcon.q_sample(schedule, m.pos, t, m.batch)
    torch.manual_seed(5)
    b = physcon.q_sample(schedule, m.pos, t, m.batch)
    assert torch.equal(a.eps, b.eps)
    assert ref.segment_mean(a.eps, m.batch, 3).abs().max() < 1e-12
    level32 = schedule.level(t)
    assert level32.alpha.dtype == torch.float32
    assert schedule.level(t, torch.float64).alpha.dtype == torch.float64
    with pytest.raises(TypeError, match="`dtype`"):
        schedule.level(t, torch.int64)
