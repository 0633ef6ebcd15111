#!/usr/bin/env python3
"""The two-stage example's stage-2 consistency step in plain PyTorch, side by side with physcon.

Same reference model as examples/two_stage/src/model.rs (same parameter names and
shapes, so physcon's weights load as they are), the same losses as physcon
(per-molecule means, masks, the exact frozen-teacher surrogate of
`GradientFlow::ToStructure`), the same step as examples/two_stage/benches/step.rs: energy and
forces on a batch of `mmff` frames, denoising, energy and forces on a batch of
`xtb-perturbed` frames, optimality (stationarity) of the one-step structure
x0_hat(R_t) at t in 1..=10, score consistency with model forces at t in 1..=20,
backward of the weighted total, plain SGD update.

1. Check: for each fixture the Rust bench wrote (`step-fixture-b<B>-<dtype>.safetensors`:
   initial weights, batches, the drawn steps and noise, per-term loss values and the
   gradients of the total), compute the same step from the same inputs and compare
   every loss term and every parameter gradient.
2. Time: the same step on the same batches and weights, f32, at each thread count
   (torch.set_num_threads), drawing its own steps and noise like the Rust step.
3. Print the table against `step-rust.json` (the Rust bench's timings).

    scripts/with-libtorch.sh python3 scripts/bench_pytorch.py            # after `cargo bench --bench step`
    scripts/with-libtorch.sh python3 scripts/bench_pytorch.py --check-only

Needs only torch 2.13.0 (safetensors files are read with a few lines below; no numpy).
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

ELEMENTS = [1, 6, 7, 8, 9, 16, 17]
BOND_CLASSES = 5
TIME_FREQUENCIES = 8


# ---------------------------------------------------------------- safetensors

_DTYPES = {
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def load_safetensors(path):
    """A safetensors file as a dict of CPU tensors (the format: u64 header length, JSON header, raw data)."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        if end > start:
            t = torch.frombuffer(bytearray(data[base + start : base + end]), dtype=dtype)
        else:
            t = torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


# ---------------------------------------------------------------- model


class Layer(nn.Module):
    def __init__(self, h, rbf):
        super().__init__()
        self.receiver = nn.Linear(h, h)
        self.sender = nn.Linear(h, h, bias=False)
        self.edge = nn.Linear(rbf + BOND_CLASSES, h, bias=False)
        self.edge2 = nn.Linear(h, h)
        self.node1 = nn.Linear(2 * h, h)
        self.node2 = nn.Linear(h, h)


class Model(nn.Module):
    """examples/two_stage/src/model.rs: shared EGNN-style encoder, energy head, eps head."""

    def __init__(self, hidden=64, layers=3, rbf=16, rbf_max=6.0, steps=1000):
        super().__init__()
        h = hidden
        self.rbf, self.rbf_max, self.steps, self.n_layers = rbf, rbf_max, steps, layers
        self.embed = nn.Embedding(len(ELEMENTS), h)
        self.time = nn.Linear(2 * TIME_FREQUENCIES, h)
        for k in range(layers):
            setattr(self, f"layer{k}", Layer(h, rbf))
        self.energy1 = nn.Linear(h, h)
        self.energy2 = nn.Linear(h, 1)
        self.eps1 = nn.Linear(h, h)
        self.eps2 = nn.Linear(h, 1)
        self.register_buffer("references", torch.zeros(len(ELEMENTS)))

    def encode(self, g, pos, t_fraction):
        dtype = pos.dtype
        diff = pos.index_select(0, g.receiver) - pos.index_select(0, g.sender)
        dist = (diff.square().sum(1) + 1e-8).sqrt()
        centres = torch.linspace(0.0, self.rbf_max, self.rbf, dtype=dtype)
        width = self.rbf_max / (self.rbf - 1)
        rbf = torch.exp(-(dist.unsqueeze(1) - centres).square() / (2.0 * width * width))
        freqs = torch.exp(torch.arange(TIME_FREQUENCIES, dtype=dtype) * math.log(2.0)) * math.pi
        angles = t_fraction.unsqueeze(1) * freqs
        time_emb = self.time(torch.cat([angles.sin(), angles.cos()], 1))
        h = self.embed(g.element) + time_emb.index_select(0, g.batch)
        edge_features = torch.cat([rbf, g.bond], 1)
        message = None
        for k in range(self.n_layers):
            layer = getattr(self, f"layer{k}")
            pre = (
                layer.receiver(h).index_select(0, g.receiver)
                + layer.sender(h).index_select(0, g.sender)
                + layer.edge(edge_features)
            )
            message = F.silu(layer.edge2(F.silu(pre)))
            aggregate = torch.zeros_like(h).index_add(0, g.receiver, message) * g.inv_neighbours
            h = h + layer.node2(F.silu(layer.node1(torch.cat([h, aggregate], 1))))
        return h, message, diff, dist

    def energy(self, g, pos):
        zero_time = torch.zeros(g.num_molecules, dtype=pos.dtype)
        h, _, _, _ = self.encode(g, pos, zero_time)
        atomic = self.energy2(F.silu(self.energy1(h))).squeeze(1) + self.references.index_select(0, g.element)
        return torch.zeros(g.num_molecules, dtype=pos.dtype).index_add(0, g.batch, atomic)

    def eps(self, g, x_t, t):
        t_fraction = t.to(x_t.dtype) / self.steps
        _, message, diff, dist = self.encode(g, x_t, t_fraction)
        w = self.eps2(F.silu(self.eps1(message)))
        vectors = diff / (dist.unsqueeze(1) + 1.0) * w
        eps = torch.zeros_like(x_t).index_add(0, g.receiver, vectors) * g.inv_neighbours
        mean = torch.zeros(g.num_molecules, 3, dtype=x_t.dtype).index_add(0, g.batch, eps) / g.counts.to(
            x_t.dtype
        ).unsqueeze(1)
        return eps - mean.index_select(0, g.batch)


class Graph:
    """Graph::new of model.rs: element classes, directed pairs within molecules (i < j, then both
    directions), bond-order one-hot, 1 / (n - 1) per atom."""

    def __init__(self, species, batch, bond_index, bond_order, num_molecules, dtype):
        lut = torch.full((119,), -1, dtype=torch.long)
        lut[ELEMENTS] = torch.arange(len(ELEMENTS))
        self.element = lut[species]
        assert (self.element >= 0).all(), "an element the model does not know"
        self.batch = batch
        self.num_molecules = num_molecules
        self.counts = torch.bincount(batch, minlength=num_molecules)
        n_atoms = species.numel()
        starts = torch.cumsum(self.counts, 0) - self.counts
        first, second = [], []
        for start, c in zip(starts.tolist(), self.counts.tolist()):
            iu = torch.triu_indices(c, c, 1)
            first.append(iu[0] + start)
            second.append(iu[1] + start)
        i, j = torch.cat(first), torch.cat(second)
        cls = torch.zeros_like(i)
        if bond_index is not None and bond_index.numel() > 0:
            lo, hi = bond_index.min(1).values, bond_index.max(1).values
            keys, order = torch.sort(lo * n_atoms + hi)
            orders = bond_order[order]
            pair_keys = i * n_atoms + j
            at = torch.searchsorted(keys, pair_keys).clamp(max=keys.numel() - 1)
            cls = torch.where(keys[at] == pair_keys, orders[at], cls)
        self.receiver = torch.stack([i, j], 1).reshape(-1)
        self.sender = torch.stack([j, i], 1).reshape(-1)
        self.bond = F.one_hot(torch.stack([cls, cls], 1).reshape(-1), BOND_CLASSES).to(dtype)
        inv = (self.counts.to(dtype) - 1.0).clamp_min(1.0).reciprocal()
        self.inv_neighbours = inv.index_select(0, batch).unsqueeze(1)


# ---------------------------------------------------------------- losses (physcon's, written out)


def mol_sum(g, values):
    return torch.zeros((g.num_molecules,) + tuple(values.shape[1:]), dtype=values.dtype).index_add(
        0, g.batch, values
    )


def mol_mean(g, values):
    counts = g.counts.to(values.dtype).reshape((-1,) + (1,) * (values.dim() - 1))
    return mol_sum(g, values) / counts


def centre(g, x):
    return x - mol_mean(g, x).index_select(0, g.batch)


def molecule_mean_of_atoms(g, per_atom):
    return mol_mean(g, per_atom).mean()


def masked_mean(per_molecule, mask):
    kept = torch.where(mask, per_molecule, torch.zeros_like(per_molecule))
    return kept.sum() / mask.sum(dtype=per_molecule.dtype).clamp_min(1.0)


def energy_loss_per_atom_mse(g, pred, target, mask):
    target = torch.where(mask, target.detach(), torch.zeros_like(target))
    err = (pred - target) / g.counts.to(pred.dtype)
    return masked_mean(err.square(), mask)


def force_loss(g, pred, target, mask):
    atom_mask = mask.index_select(0, g.batch).unsqueeze(1)
    target = torch.where(atom_mask, target.detach(), torch.zeros_like(target))
    per_atom = (pred - target).square().mean(1)
    return masked_mean(mol_mean(g, per_atom), mask)


def squared_error_per_atom_mean(g, a, b):
    return molecule_mean_of_atoms(g, (a - b).square().sum(1))


class Schedule:
    def __init__(self, alpha_bar):
        self.alpha_bar = alpha_bar  # f64 [T + 1]

    def level(self, t, dtype):
        abar = self.alpha_bar.index_select(0, t)
        return abar.sqrt().to(dtype), (1.0 - abar).sqrt().to(dtype)

    def q_sample(self, g, x0, t, eps):
        a, s = self.level(t, x0.dtype)
        x0c = centre(g, x0)
        x_t = x0c * a.index_select(0, g.batch).unsqueeze(1) + eps * s.index_select(0, g.batch).unsqueeze(1)
        return x0c, x_t, a, s


def com_free_noise(g, like):
    return centre(g, torch.randn(like.shape, dtype=like.dtype))


class Batch:
    def __init__(self, fx, prefix, dtype):
        self.pos = fx[f"{prefix}.pos"].to(dtype)
        species, batch = fx[f"{prefix}.species"], fx[f"{prefix}.batch"]
        self.energy = fx[f"{prefix}.energy"].to(dtype)
        self.energy_mask = fx[f"{prefix}.energy_mask"].bool()
        self.forces = fx[f"{prefix}.forces"].to(dtype)
        self.force_mask = fx[f"{prefix}.force_mask"].bool()
        num_molecules = self.energy.numel()
        self.g = Graph(
            species,
            batch,
            fx.get(f"{prefix}.bond_index"),
            fx.get(f"{prefix}.bond_order"),
            num_molecules,
            dtype,
        )


class Step:
    """The stage-2 consistency step. `draws` (dict) replays the Rust bench's random draws."""

    def __init__(self, fx, dtype):
        hidden, layers, rbf, steps = fx["meta.ints"].tolist()
        rbf_max, kt, lr, small_fraction = fx["meta.floats"].tolist()
        ranges = fx["meta.ranges"].tolist()
        self.small_t = (ranges[0], ranges[1])
        self.optimality_t = (ranges[2], ranges[3])
        self.score_t = (ranges[4], ranges[5])
        self.kt, self.lr, self.small_fraction, self.steps = kt, lr, small_fraction, steps
        self.model = Model(hidden, layers, rbf, rbf_max, steps).to(dtype)
        state = {k[len("model.") :]: v.to(dtype) for k, v in fx.items() if k.startswith("model.")}
        self.model.load_state_dict(state, strict=True)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.schedule = Schedule(fx["meta.alpha_bar"])
        self.weights = {k[len("weight.") :]: v.item() for k, v in fx.items() if k.startswith("weight.")}
        self.s = Batch(fx, "s", dtype)
        self.o = Batch(fx, "o", dtype)

    def sample_t(self, n, lo_hi):
        return torch.randint(lo_hi[0], lo_hi[1] + 1, (n,), dtype=torch.long)

    # Each term as physcon computes it.
    def energy_force(self, b):
        m, g = self.model, b.g
        x = b.pos.detach().requires_grad_(True)
        e = m.energy(g, x)
        l_energy = energy_loss_per_atom_mse(g, e, b.energy, b.energy_mask)
        (grad,) = torch.autograd.grad(e.sum(), [x], retain_graph=True, create_graph=True)
        l_force = force_loss(g, -grad, b.forces, b.force_mask)
        return l_energy, l_force

    def denoising(self, b, draws=None):
        m, g = self.model, b.g
        n = g.num_molecules
        if draws is None:
            t_all = self.sample_t(n, (1, self.steps))
            t_small = self.sample_t(n, self.small_t)
            pick_small = torch.rand(n) < self.small_fraction
            t = torch.where(pick_small, t_small, t_all)
            eps = com_free_noise(g, b.pos)
        else:
            t, eps = draws["t_den"], draws["eps_den"]
        _, x_t, _, _ = self.schedule.q_sample(g, b.pos, t, eps)
        eps_hat = m.eps(g, x_t, t)
        return squared_error_per_atom_mean(g, eps_hat, eps)

    def optimality(self, b, draws=None):
        m, g = self.model, b.g
        if draws is None:
            t = self.sample_t(g.num_molecules, self.optimality_t)
            eps = com_free_noise(g, b.pos)
        else:
            t, eps = draws["t_opt"], draws["eps_opt"]
        _, x_t, a, s = self.schedule.q_sample(g, b.pos, t, eps)
        eps_hat = m.eps(g, x_t, t)
        generated = (x_t - eps_hat * s.index_select(0, g.batch).unsqueeze(1)) / a.index_select(0, g.batch).unsqueeze(1)
        # Stationarity with the energy as an exact frozen teacher (GradientFlow::ToStructure).
        leaf = generated.detach().requires_grad_(True)
        e = m.energy(g, leaf)
        (grad,) = torch.autograd.grad(e.sum(), [leaf], create_graph=True)
        value = molecule_mean_of_atoms(g, grad.square().sum(1))
        (v,) = torch.autograd.grad(value, [leaf])
        return value.detach() + (v.detach() * (generated - generated.detach())).sum()

    def score(self, b, draws=None):
        m, g = self.model, b.g
        if draws is None:
            t = self.sample_t(g.num_molecules, self.score_t)
            eps = com_free_noise(g, b.pos)
        else:
            t, eps = draws["t_score"], draws["eps_score"]
        x0c, x_t, a, s = self.schedule.q_sample(g, b.pos, t, eps)
        eps_hat = m.eps(g, x_t, t)
        leaf = x0c.detach().requires_grad_(True)
        e = m.energy(g, leaf)
        (grad,) = torch.autograd.grad(e.sum(), [leaf])
        ratio = (s / a / -self.kt).index_select(0, g.batch).unsqueeze(1)
        target = centre(g, -grad) * ratio
        return squared_error_per_atom_mean(g, eps_hat, target.detach())

    def losses(self, draws=None):
        """Terms in the order of the example's Trainer::losses: (name, weight, value)."""
        l_e, l_f = self.energy_force(self.s)
        l_den = self.denoising(self.s, draws)
        l_e2, l_f2 = self.energy_force(self.o)
        terms = [("denoising", l_den), ("force", (l_f + l_f2) / 2.0), ("energy", (l_e + l_e2) * 0.5)]
        terms.append(("optimality", self.optimality(self.s, draws)))
        terms.append(("score", self.score(self.o, draws)))
        return [(name, self.weights[name], value) for name, value in terms]

    def zero_grads(self):
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def step(self, draws=None):
        terms = self.losses(draws)
        total = None
        for _, w, value in terms:
            if w > 0.0:
                total = value * w if total is None else total + value * w
        self.zero_grads()
        total.backward()
        with torch.no_grad():
            for p in self.params:
                if p.grad is not None:
                    p.sub_(p.grad * self.lr)
        return terms, total

    def parts(self):
        """Each loss alone, forward + backward, as examples/two_stage/benches/step.rs times them."""
        w = self.weights

        def backward(loss):
            self.zero_grads()
            loss.backward()

        def ef(b):
            e, f = self.energy_force(b)
            backward(e * w["energy"] + f * w["force"])

        return [
            ("energy+force mmff", lambda: ef(self.s)),
            ("denoising", lambda: backward(self.denoising(self.s))),
            ("energy+force perturbed", lambda: ef(self.o)),
            ("optimality", lambda: backward(self.optimality(self.s))),
            ("score", lambda: backward(self.score(self.o))),
        ]


# ---------------------------------------------------------------- check


def check(path, dtype):
    fx = load_safetensors(path)
    st = Step(fx, dtype)
    draws = {k[len("draw.") :]: v for k, v in fx.items() if k.startswith("draw.")}
    draws = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in draws.items()}
    terms = st.losses(draws)
    total = None
    for _, w, value in terms:
        if w > 0.0:
            total = value * w if total is None else total + value * w
    total.backward()
    rtol_loss, rtol_grad = (1e-4, 1e-3) if dtype == torch.float32 else (1e-9, 1e-7)
    rows, ok = [], True
    for name, _, value in terms + [("total", 1.0, total)]:
        ref = fx[f"loss.{name}"].item()
        got = value.item()
        rel = abs(got - ref) / max(abs(ref), 1e-30)
        ok &= rel <= rtol_loss
        rows.append((name, ref, got, rel))
    worst_grad, worst_name = 0.0, ""
    for name, p in st.model.named_parameters():
        ref = fx.get(f"grad.{name}")
        if ref is None:
            ok = False
            print(f"  no Rust gradient for {name}")
            continue
        ref = ref.to(torch.float64)
        got = p.grad.to(torch.float64)
        rel = ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        if rel > worst_grad:
            worst_grad, worst_name = rel, name
    ok &= worst_grad <= rtol_grad
    print(f"check {os.path.basename(path)} ({str(dtype).replace('torch.', '')}):")
    for name, ref, got, rel in rows:
        print(f"  {name:<11} physcon {ref:>16.9e}  pytorch {got:>16.9e}  rel {rel:.1e}")
    print(
        f"  gradients of the total, {len(list(st.model.parameters()))} tensors: worst relative L2 error "
        f"{worst_grad:.1e} ({worst_name})"
    )
    print(f"  -> {'OK' if ok else 'MISMATCH'} (tolerances: loss rel {rtol_loss:g}, gradient rel {rtol_grad:g})")
    return ok, rows, worst_grad


# ---------------------------------------------------------------- timing


def time_reps(f, warmup, min_reps, min_seconds, max_reps=200):
    for _ in range(warmup):
        f()
    samples = []
    started = time.perf_counter()
    while len(samples) < min_reps or (time.perf_counter() - started < min_seconds and len(samples) < max_reps):
        t = time.perf_counter()
        f()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return {"median": samples[len(samples) // 2], "min": samples[0], "reps": len(samples)}


def measure(path, threads, args):
    torch.set_num_threads(threads)
    fx = load_safetensors(path)
    st = Step(fx, torch.float32)
    torch.manual_seed(0)
    step = time_reps(lambda: st.step(), 2, args.reps, args.min_seconds)
    parts = {}
    if not args.no_breakdown:
        for name, f in st.parts():
            parts[name] = time_reps(f, 2, args.reps, args.min_seconds)["median"] * 1e3
    b = st.s.g.num_molecules
    return {
        "threads": threads,
        "batch": b,
        "atoms": [st.s.pos.shape[0], st.o.pos.shape[0]],
        "step_ms": step["median"] * 1e3,
        "step_min_ms": step["min"] * 1e3,
        "reps": step["reps"],
        "mol_per_s": b / step["median"],
        "parts_ms": parts,
    }


def profile(path, d):
    """Self CPU time per libtorch operator over one step (same kernels as the Rust side)."""
    torch.set_num_threads(1)
    st = Step(load_safetensors(path), torch.float32)
    torch.manual_seed(0)
    for _ in range(2):
        st.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        st.step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    name = os.path.basename(path).replace("step-fixture-", "profile-").replace(".safetensors", ".txt")
    with open(os.path.join(d, name), "w") as f:
        f.write(table + "\n")
    print(table)


def read_runs(paths):
    """{(impl, batch, threads): [run, ...]} from result files of either side."""
    runs = {}
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        for r in doc["runs"]:
            runs.setdefault((doc["impl"], r["batch"], r["threads"]), []).append(r)
    return runs


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def table(paths, out_md):
    """The side-by-side table over all result files: per configuration the median over runs
    (rounds) of each run's median step time, and the fastest single step seen."""
    runs = read_runs(paths)
    configs = sorted({(b, t) for (_, b, t) in runs})
    lines = [
        "| batch | threads | physcon ms/step | PyTorch ms/step | physcon / PyTorch | per-round ratios "
        "| ratio of fastest steps | physcon mol/s | PyTorch mol/s |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    part_lines = [
        "| batch | threads | loss (forward + backward) | physcon ms | PyTorch ms | ratio |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for b, t in configs:
        rs, ps = runs.get(("physcon", b, t), []), runs.get(("pytorch", b, t), [])
        if not rs or not ps:
            continue
        rm, pm = median([r["step_ms"] for r in rs]), median([r["step_ms"] for r in ps])
        rmin, pmin = min(r["step_min_ms"] for r in rs), min(r["step_min_ms"] for r in ps)
        per_round = ", ".join(f"{r['step_ms'] / p['step_ms']:.2f}" for r, p in zip(rs, ps))
        lines.append(
            f"| {b} | {t} | {rm:.1f} | {pm:.1f} | {rm / pm:.3f} | {per_round} | {rmin / pmin:.3f} "
            f"| {b / rm * 1e3:.0f} | {b / pm * 1e3:.0f} |"
        )
        rp = next((r["parts_ms"] for r in rs if r.get("parts_ms")), {})
        pp = next((p["parts_ms"] for p in ps if p.get("parts_ms")), {})
        for name, ms in pp.items():
            if name in rp:
                part_lines.append(f"| {b} | {t} | {name} | {rp[name]:.1f} | {ms:.1f} | {rp[name] / ms:.3f} |")
    text = (
        "stage-2 consistency step (physcon / PyTorch < 1: physcon faster; step times are medians over "
        f"{max(len(v) for v in runs.values())} run(s) of each run's median)\n\n"
        + "\n".join(lines)
        + "\n\nper loss (one run each)\n\n"
        + "\n".join(part_lines)
        + "\n"
    )
    print("\n" + text)
    with open(out_md, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default="target/bench", help="folder of the Rust bench's fixtures and results")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="32,256")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--skip-check", action="store_true", help="time without re-running the equality check")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--json", help="where to write the timings (default <fixtures>/step-pytorch.json)")
    ap.add_argument(
        "--table",
        nargs="+",
        metavar="JSON",
        help="only print the side-by-side table of these result files (both sides, any rounds)",
    )
    ap.add_argument(
        "--profile",
        type=int,
        metavar="B",
        help="profile one step at batch B (1 thread) with torch.profiler: which kernels dominate",
    )
    args = ap.parse_args()
    d = args.fixtures
    if args.table:
        table(args.table, os.path.join(d, "step-table.md"))
        return
    batches = [int(x) for x in args.batches.split(",")]
    threads = [int(x) for x in args.threads.split(",")]

    print(f"torch {torch.__version__}, python {platform.python_version()}")
    torch.set_num_threads(1)
    checks = {}
    if not args.skip_check:
        all_ok = True
        for name in sorted(os.listdir(d)):
            if name.startswith("step-fixture-") and name.endswith(".safetensors"):
                dtype = torch.float64 if name.endswith("-f64.safetensors") else torch.float32
                ok, rows, worst_grad = check(os.path.join(d, name), dtype)
                checks[name] = {"ok": ok, "worst_loss_rel": max(r[3] for r in rows), "worst_grad_rel": worst_grad}
                all_ok &= ok
        if not checks:
            sys.exit(f"no step-fixture-*.safetensors in {d}: run `cargo bench --bench step` first")
        if not all_ok:
            sys.exit("equality check FAILED: PyTorch and physcon compute different steps")
        print("equality check: OK")
    if args.check_only:
        return
    if args.profile:
        profile(os.path.join(d, f"step-fixture-b{args.profile}-f32.safetensors"), d)
        return

    results = []
    for b in batches:
        path = os.path.join(d, f"step-fixture-b{b}-f32.safetensors")
        for t in threads:
            r = measure(path, t, args)
            results.append(r)
            print(f"pytorch batch {b} threads {t}: {r['step_ms']:.2f} ms/step ({r['reps']} reps), {r['mol_per_s']:.1f} mol/s")
            for name, ms in r["parts_ms"].items():
                print(f"{name:>26} {ms:>11.2f} ms")
    out = args.json or os.path.join(d, "step-pytorch.json")
    with open(out, "w") as f:
        json.dump({"impl": "pytorch", "torch": torch.__version__, "checks": checks, "runs": results}, f, indent=2)
    rust = os.path.join(d, "step-rust.json")
    if not args.json and os.path.exists(rust):
        table([rust, out], os.path.join(d, "step-table.md"))


if __name__ == "__main__":
    main()
