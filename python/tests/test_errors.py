"""Bad inputs raise ValueError/TypeError naming the argument; an exception
raised inside the user's energy model comes out as itself, traceback kept;
an energy model that ignores its positions is refused instead of giving a
silent zero; nothing leaks or hangs."""

import gc
import threading
import traceback
import weakref

import pytest
import torch

import physcon


class ModelFailure(Exception):
    """An exception type physcon cannot know."""


def test_shape_errors_name_the_argument(mol64):
    m = mol64
    with pytest.raises(ValueError, match="`structure`: expected shape"):
        physcon.StationarityLoss()(m.energy, m.pos[:, :2], m.batch)
    with pytest.raises(ValueError, match="`eps_hat`"):
        physcon.DenoisingLoss()(m.eps[:-1], m.eps, m.batch)
    with pytest.raises(ValueError, match="`target`"):
        physcon.EnergyLoss()(m.energies, m.energies[:2], m.batch)
    with pytest.raises(ValueError, match="`weights`"):
        physcon.DenoisingLoss().per_molecule(m.eps, m.eps, m.batch).weighted_mean(torch.ones(2, dtype=torch.float64))


def test_dtype_errors_are_type_errors(mol64):
    m = mol64
    with pytest.raises(TypeError, match="`eps`: expected dtype"):
        physcon.DenoisingLoss()(m.eps, m.eps.float(), m.batch)
    with pytest.raises(TypeError, match="`batch`: expected dtype torch.int64, got torch.int32"):
        physcon.DenoisingLoss()(m.eps, m.eps, m.batch.int())
    with pytest.raises(TypeError, match="`batch`: expected a torch.Tensor"):
        physcon.DenoisingLoss()(m.eps, m.eps, [0, 1])


def test_value_errors_name_the_value(mol64):
    m = mol64
    with pytest.raises(ValueError, match="`kt` must be positive and finite, got -1"):
        physcon.ScoreConsistency(-1.0)
    with pytest.raises(ValueError, match="`flow`"):
        physcon.StationarityLoss(flow="sideways")
    with pytest.raises(ValueError, match="`checks`"):
        physcon.ForceLoss(checks="some")
    with pytest.raises(ValueError, match="`metric`"):
        physcon.EnergyLoss("l3")
    with pytest.raises(ValueError, match="`delta` must be positive"):
        physcon.EnergyLoss("huber", delta=0.0)
    with pytest.raises(ValueError, match="`sigma`: every value must be positive"):
        physcon.NoiseLevel(m.alpha, torch.zeros(3, dtype=torch.float64))
    bad = m.pos.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="`structure` contains NaN"):
        physcon.StationarityLoss()(m.energy, bad, m.batch)
    with pytest.raises(ValueError, match="molecule 1 has no atoms"):
        physcon.DenoisingLoss()(m.eps[:2], m.eps[:2], torch.tensor([0, 2]))
    level = physcon.NoiseLevel(m.alpha, m.sigma)
    with pytest.raises(ValueError, match="`clean`"):
        physcon.ScoreConsistency(0.1)(m.eps, level, m.batch, energy=m.energy)
    with pytest.raises(ValueError, match="`forces`"):
        physcon.ScoreConsistency(0.1)(m.eps, level, m.batch, energy=m.energy, clean=m.pos, forces=m.forces)


def test_bad_model_outputs(mol64):
    m = mol64
    with pytest.raises(ValueError, match="`energy model output`: expected shape"):
        physcon.StationarityLoss()(lambda p: m.energy(p)[:2], m.pos, m.batch)
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        physcon.StationarityLoss()(lambda p: 1.0, m.pos, m.batch)
    with pytest.raises(ValueError, match="no autograd graph"):
        physcon.StationarityLoss()(lambda p: m.teacher(p.detach()), m.pos, m.batch)


def failing_energy(pos):
    raise ModelFailure("the model broke on purpose")


@pytest.mark.parametrize(
    "call",
    [
        lambda m: physcon.StationarityLoss()(failing_energy, m.pos, m.batch),
        lambda m: physcon.EnergyDescentLoss(flow="both")(failing_energy, m.pos, m.other, m.batch),
        lambda m: physcon.ScoreConsistency(0.1, flow="to_energy")(
            m.eps, physcon.NoiseLevel(m.alpha, m.sigma), m.batch, energy=failing_energy, clean=m.pos
        ),
        lambda m: physcon.energy_and_forces(failing_energy, m.pos, m.batch),
        lambda m: physcon.energy_gap(failing_energy, m.pos, m.other, m.batch),
    ],
    ids=["stationarity", "descent", "score", "energy_and_forces", "energy_gap"],
)
def test_model_exception_propagates_with_traceback(mol64, call):
    with pytest.raises(ModelFailure, match="broke on purpose") as info:
        call(mol64)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "failing_energy" in frames, frames


def test_exception_raised_in_a_python_autograd_function_backward(mol64):
    """Autograd runs this backward inside physcon's own derivative: it comes out as itself."""

    class Explodes(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            raise ModelFailure("backward broke")

    m = mol64
    with pytest.raises(ModelFailure, match="backward broke"):
        physcon.StationarityLoss()(lambda p: m.energy(Explodes.apply(p)), m.pos, m.batch)


def test_python_autograd_function_in_the_model_does_not_deadlock(mol64):
    """A custom autograd.Function's backward (Python) runs inside the loss's
    derivative and again in loss.backward(): both need the GIL."""

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    m = mol64
    x = m.pos.clone().requires_grad_(True)
    loss = physcon.StationarityLoss(flow="both")(lambda p: m.energy(Square.apply(p)), x, m.batch)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_losses_run_concurrently_in_threads(mol64):
    """Two Python threads that both train through the losses finish (no deadlock, no shared state)."""
    m = mol64
    errors = []

    def work():
        try:
            for _ in range(20):
                x = m.pos.clone().requires_grad_(True)
                physcon.StationarityLoss(flow="both")(m.energy, x, m.batch).backward()
        except Exception as e:  # reported below; a thread cannot raise into pytest
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors


def test_nothing_keeps_the_model_alive(mol64):
    """Neither a successful call, nor a failed one, nor the loss's graph once
    dropped, holds a reference to the user's model."""
    m = mol64

    class Model(torch.nn.Module):
        def __init__(self, inner, fail):
            super().__init__()
            self.inner, self.fail = inner, fail

        def forward(self, pos):
            if self.fail:
                raise ModelFailure("no")
            return self.inner(pos)

    for fail in [False, True]:
        model = Model(m.energy, fail)
        alive = weakref.ref(model)
        try:
            x = m.pos.clone().requires_grad_(True)
            physcon.StationarityLoss(flow="both")(model, x, m.batch).backward()
        except ModelFailure:
            pass
        del model
        gc.collect()
        assert alive() is None, f"the model leaked (fail={fail})"


def test_repeated_failures_do_not_grow_memory(mol64):
    """A failing model called many times leaves no tensors behind (the count of
    live tensors the garbage collector sees stays flat)."""
    m = mol64

    def live_tensors():
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    def once():
        try:
            physcon.StationarityLoss()(failing_energy, m.pos, m.batch)
        except ModelFailure:
            pass

    once()
    before = live_tensors()
    for _ in range(200):
        once()
    assert live_tensors() <= before


# ---------------------------------------------------------------------------
# No silent zero: an energy model that does not compute from the positions it is given


def ignoring_models(m):
    """The likeliest wrapping mistakes: a closure over a captured tensor, and a detached input."""
    captured = m.pos.clone().requires_grad_(True)
    return {
        "captured": lambda pos: m.energy(captured),
        "detached": lambda pos: m.energy(pos.detach()),
    }


@pytest.mark.parametrize("mistake", ["captured", "detached"])
@pytest.mark.parametrize(
    "call",
    [
        lambda m, e: physcon.energy_and_forces(e, m.pos, m.batch),
        lambda m, e: physcon.energy_and_forces(e, m.pos, m.batch, create_graph=True),
        lambda m, e: physcon.StationarityLoss()(e, m.pos, m.batch),
        lambda m, e: physcon.StationarityLoss(flow="both")(e, m.pos, m.batch),
        lambda m, e: physcon.StationarityLoss(flow="to_energy")(e, m.pos, m.batch),
        lambda m, e: physcon.EnergyDescentLoss()(e, m.pos.clone().requires_grad_(True), m.other, m.batch),
        lambda m, e: physcon.EnergyDescentLoss(flow="both")(e, m.pos, m.other, m.batch),
        lambda m, e: physcon.EnergyDescentLoss(flow="to_energy")(e, m.pos, m.other, m.batch),
        lambda m, e: physcon.ScoreConsistency(0.1)(
            m.eps, physcon.NoiseLevel(m.alpha, m.sigma), m.batch, energy=e, clean=m.pos
        ),
        lambda m, e: physcon.ScoreConsistency(0.1, flow="to_energy")(
            m.eps, physcon.NoiseLevel(m.alpha, m.sigma), m.batch, energy=e, clean=m.pos
        ),
    ],
    ids=[
        "forces",
        "forces_graph",
        "stationarity",
        "stationarity_both",
        "stationarity_to_energy",
        "descent",
        "descent_both",
        "descent_to_energy",
        "score",
        "score_to_energy",
    ],
)
def test_an_energy_that_ignores_its_positions_is_refused(mol64, mistake, call):
    m = mol64
    with pytest.raises(ValueError, match="does not depend on the positions it was given|no autograd graph"):
        call(m, ignoring_models(m)[mistake])


def test_an_energy_that_is_flat_in_the_positions_is_not_refused(mol64):
    """A model that uses its positions but has zero gradient there is legal: zero, not an error."""
    m = mol64
    flat = lambda pos: m.energy(m.pos) + 0.0 * pos.sum()  # noqa: E731
    _, f = physcon.energy_and_forces(flat, m.pos, m.batch)
    assert f.abs().max() == 0
    assert physcon.StationarityLoss()(flat, m.pos, m.batch).item() == 0.0


def test_kelvin_passed_as_kt_is_refused_with_the_way_out():
    with pytest.raises(ValueError, match=r"not a temperature.*physcon.kelvin_to_kt\(300\) = 0.0258"):
        physcon.ScoreConsistency(300.0)
    # Energies in kcal/mol or kJ/mol have kT of order one: allowed.
    assert physcon.ScoreConsistency(2.494).kt == 2.494


def test_a_batch_vector_one_atom_short_blames_the_batch(mol64):
    m = mol64
    short = m.batch[:-1]
    e, f = physcon.energy_and_forces(m.energy, m.pos, m.batch)
    for call in [
        lambda: physcon.ForceLoss()(f, m.forces, short),
        lambda: physcon.DenoisingLoss()(m.eps, m.eps, short),
        lambda: physcon.StationarityLoss()(m.energy, m.pos, short),
    ]:
        with pytest.raises(ValueError, match=r"has 9 atoms \(\[9, 3\]\) but `batch` has 8"):
            call()


def test_a_per_atom_sigma_blames_the_level_not_alpha(mol64):
    m = mol64
    per_atom = physcon.NoiseLevel.sigma_only(m.sigma[m.batch])
    with pytest.raises(ValueError, match=r"`level`: it holds 9 values \(one per atom\?\) but `batch` has 3 molecules"):
        physcon.ScoreConsistency(0.1)(m.eps, per_atom, m.batch, forces=m.forces)


def test_inference_mode_gets_a_clear_error(mol64):
    m = mol64
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"torch.inference_mode\(\).*use torch.no_grad\(\)"):
            physcon.energy_and_forces(m.energy, m.pos, m.batch)
        with pytest.raises(RuntimeError, match=r"inference_mode"):
            physcon.StationarityLoss()(m.energy, m.pos, m.batch)
        made_here = m.pos.clone()
    with pytest.raises(RuntimeError, match=r"`pos` was created under torch.inference_mode\(\)"):
        physcon.energy_and_forces(m.energy, made_here, m.batch)
    # Losses that need no derivative work in inference mode.
    with torch.inference_mode():
        assert torch.isfinite(physcon.DenoisingLoss()(m.eps, m.eps, m.batch))


def test_the_losses_never_hand_the_callers_tensors_to_the_model(mol64):
    """A model may call requires_grad_ on the positions it is given (MACE does): the
    caller's own tensors must come back as they went in."""
    m = mol64

    def grabby(pos):
        if not pos.requires_grad and pos.is_leaf:
            pos.requires_grad_(True)
        return m.energy(pos)

    structure, reference = m.pos.clone(), m.other.clone()
    for flow in ["to_structure", "both", "to_energy"]:
        physcon.EnergyDescentLoss(flow=flow)(grabby, structure, reference, m.batch)
        physcon.StationarityLoss(flow=flow)(grabby, structure, m.batch)
    physcon.energy_gap(grabby, structure, reference, m.batch)
    physcon.energy_and_forces(grabby, structure, m.batch)
    assert not structure.requires_grad and not reference.requires_grad
