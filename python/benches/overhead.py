"""Overhead of physcon's losses in a PyTorch training step.

The same stage-2 step twice: once with physcon's losses (energy, force,
denoising, stationarity with the frozen-teacher flow, score consistency
with the model's forces), once with the same losses written in PyTorch from
the documented formulas (the frozen teacher by the documented surrogate).
The model, data and noise are those of examples/python/train_ddp.py. The
two steps are first checked to give the same loss and gradients, then timed
in alternating rounds; the ratio physcon / PyTorch is printed per round.

    scripts/with-libtorch.sh python python/benches/overhead.py [--device cuda] [--threads 2]

Not a test: timings depend on the machine and its load.
"""

import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))

import physcon  # noqa: E402
import train_ddp as ex  # noqa: E402


def seg_mean(values, b):
    out = values.new_zeros((b.layout.num_molecules,) + values.shape[1:]).index_add(0, b.batch, values)
    return out / b.layout.counts.to(values.dtype).reshape((-1,) + (1,) * (values.dim() - 1))


def pytorch_terms(model, b, eps, sigma, kt):
    """The step's loss terms in plain PyTorch."""
    energy = lambda pos: model.energy(pos, b)  # noqa: E731
    n = b.layout.counts.to(b.pos.dtype)
    x = b.pos.detach().requires_grad_(True)
    e = energy(x)
    (grad,) = torch.autograd.grad(e.sum(), x, create_graph=True)
    f = -grad
    alpha = (1 - sigma**2).sqrt()
    x0 = b.pos - ex.physcon_centroid(b.pos, b)[b.batch]
    x_t = alpha[b.batch].unsqueeze(1) * x0 + sigma[b.batch].unsqueeze(1) * eps
    eps_hat = model.noise(x_t, sigma[b.batch], b)
    x0_hat = (x_t - sigma[b.batch].unsqueeze(1) * eps_hat) / alpha[b.batch].unsqueeze(1)
    # Stationarity, frozen teacher: evaluate on a leaf copy, take dL/dR' there
    # only, and hand that gradient to R_hat through a surrogate.
    leaf = x0_hat.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(leaf).sum(), leaf, create_graph=True)
    stat = seg_mean((g * g).sum(dim=1), b).mean()
    (v,) = torch.autograd.grad(stat, leaf)
    optimality = stat.detach() + (v * (x0_hat - x0_hat.detach())).sum()
    # Score consistency, frozen teacher: forces at the clean structure are constants.
    clean = x0.detach().requires_grad_(True)
    (gc,) = torch.autograd.grad(energy(clean).sum(), clean)
    forces = -gc
    forces = forces - ex.physcon_centroid(forces, b)[b.batch]
    target = forces * (-(sigma / alpha) / kt)[b.batch].unsqueeze(1)
    return {
        "energy": (((e - b.energy) / n) ** 2).mean(),
        "forces": seg_mean(((f - b.forces) ** 2).mean(dim=1), b).mean(),
        "denoising": seg_mean(((eps_hat - eps) ** 2).sum(dim=1), b).mean(),
        "optimality": optimality,
        "score": seg_mean(((eps_hat - target) ** 2).sum(dim=1), b).mean(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--molecules", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=20, help="steps per round and arm")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    frames = ex.read_extxyz(os.path.join(ROOT, "data", "train.extxyz.gz"), args.molecules)
    b = ex.Batch(frames, ex.atomic_references(frames), dtype).to(device)
    eps, sigma = ex.global_noise(0, 0, frames, dtype)
    eps, sigma = ex.centred_noise(eps, frames).to(device), sigma.to(device)
    kt = physcon.kelvin_to_kt(300.0)
    weights = {"energy": 1.0, "forces": 10.0, "denoising": 1.0, "optimality": 0.1, "score": 1.0}
    torch.manual_seed(0)
    model = ex.Model().to(device=device, dtype=dtype)
    arms = {
        "physcon": ex.StepLoss(model, kt, weights),
        "physcon, checks='metadata'": ex.StepLoss(model, kt, weights),
    }
    fast = arms["physcon, checks='metadata'"]
    fast.energy_loss = physcon.EnergyLoss("mse", per_atom=True, checks="metadata")
    fast.force_loss = physcon.ForceLoss(checks="metadata")
    fast.denoising = physcon.DenoisingLoss(checks="metadata")
    fast.optimality = physcon.StationarityLoss(flow="to_structure", checks="metadata")
    fast.score = physcon.ScoreConsistency(kt, flow="to_structure", checks="metadata")

    def pytorch_step():
        terms = pytorch_terms(model, b, eps, sigma, kt)
        return sum(weights[k] * v for k, v in terms.items()), terms

    steps = {name: (lambda loss=loss: loss(b, eps, sigma)) for name, loss in arms.items()}
    steps["pytorch"] = pytorch_step

    # Equal values and gradients first.
    params = list(model.parameters())
    results = {}
    for name, step in steps.items():
        total, terms = step()
        results[name] = (total.detach(), {k: v.detach() for k, v in terms.items()}, torch.autograd.grad(total, params))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    want_total, want_terms, want_grads = results["pytorch"]
    for name, (total, terms, grads) in results.items():
        for k in want_terms:
            assert torch.allclose(terms[k], want_terms[k], rtol=tol, atol=0), (name, k, terms[k], want_terms[k])
        scale = max(g.abs().max() for g in want_grads)
        worst = max((g - w).abs().max() for g, w in zip(grads, want_grads)) / scale
        assert worst <= tol * 10, (name, worst.item())
        print(f"{name:28s} total {total.item():.8g}  gradient max rel. difference to pytorch {worst.item():.1e}")

    optimiser = torch.optim.Adam(params, lr=1e-6)  # tiny: the step's cost, not a moving model

    def timed(step):
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            optimiser.zero_grad(set_to_none=False)
            total, _ = step()
            total.backward()
            optimiser.step()
        sync()
        return (time.perf_counter() - start) / args.steps

    for step in steps.values():  # warm-up
        timed(step)
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(timed(step))
    print(
        f"\n{args.molecules} molecules ({b.layout.num_atoms} atoms), {args.dtype}, {device}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps (median ms/step)"
    )
    base = times["pytorch"]
    for name, ts in times.items():
        ratios = [t / p for t, p in zip(ts, base)]
        print(
            f"{name:28s} {1e3 * statistics.median(ts):8.2f} ms   ratio to pytorch: median {statistics.median(ratios):.3f} "
            f"(rounds {min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
