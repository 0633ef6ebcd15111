"""Data-parallel training with physcon's losses on torch.distributed.

A small PyTorch model (an invariant energy head and an equivariant noise
predictor) learns the shipped data (``data/train.extxyz.gz``: GFN2-xTB
energies and forces at MMFF and perturbed structures) with physcon's energy,
force, denoising, optimality (stationarity) and score-consistency losses.

Needs torch and physcon (``pip install ./python`` from the repository root).
Runs as it is in one process::

    python examples/python/train_ddp.py

and data-parallel (gloo on CPU, nccl on GPU; ``python -m torch.distributed.run``
is the same launcher where the ``torchrun`` script is not on ``PATH``)::

    torchrun --standalone --nproc_per_node 2 examples/python/train_ddp.py

The recipe (see README, "From Python"): physcon's consistency losses call the
energy model several times per step (forces at the data, the Hessian-vector
product of stationarity at the generated structure, the forces of score
consistency at the clean structure), while DDP's reducer expects one forward
of the wrapped module per backward. So either

- ``--recipe ddp`` (default): wrap ONE module whose ``forward`` computes the
  whole training loss (``StepLoss`` below), and inside it call the plain,
  unwrapped model as often as the losses need; DDP sees one forward and one
  backward per step, and averages the gradients in its buckets; or
- ``--recipe allreduce``: no DDP wrapper; after ``loss.backward()`` average
  the gradients with one ``all_reduce`` of a flat buffer.

Both give every rank the gradient of the mean loss over the union of the
ranks' batches, provided each rank holds the same number of molecules (every
physcon loss is a mean over molecules). The global batch and its noise are
drawn from seeded generators and sliced per rank, so a run on W ranks of B
molecules equals a one-process run of W*B molecules (tests/test_ddp.py).
"""

import argparse
import gzip
import os
import time

import torch
import torch.distributed as dist
from torch import nn

import physcon

SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "S": 16, "Cl": 17}


# ---------------------------------------------------------------------------
# Data


def read_extxyz(path, limit):
    """The first ``limit`` frames of an extended-XYZ file (gzip or plain) as
    ``(species [n], pos [n, 3], forces [n, 3], energy)``, float64."""
    opener = gzip.open if path.endswith(".gz") else open
    frames = []
    with opener(path, "rt", encoding="utf-8") as f:
        while len(frames) < limit:
            count = f.readline()
            if not count.strip():
                break
            comment = f.readline()
            energy = float(comment.split(" energy=")[1].split()[0])
            rows = [f.readline().split() for _ in range(int(count))]
            species = torch.tensor([SYMBOLS[r[0]] for r in rows])
            values = torch.tensor([[float(v) for v in r[1:7]] for r in rows], dtype=torch.float64)
            frames.append((species, values[:, :3], values[:, 3:6], energy))
    return frames


def atomic_references(frames):
    """Per-element reference energies (eV), least squares over the frames: the
    model then learns a residual of a few eV, not a thousand."""
    elements = sorted({int(z) for s, _, _, _ in frames for z in s})
    column = {z: k for k, z in enumerate(elements)}
    a = torch.zeros(len(frames), len(elements), dtype=torch.float64)
    for row, (species, _, _, _) in enumerate(frames):
        for z in species.tolist():
            a[row, column[z]] += 1
    e = torch.tensor([energy for _, _, _, energy in frames], dtype=torch.float64)
    solution = torch.linalg.lstsq(a, e.unsqueeze(1)).solution.squeeze(1)
    table = torch.zeros(119, dtype=torch.float64)
    for z, k in column.items():
        table[z] = solution[k]
    return table


class Batch:
    """Molecules stacked PyG-style, plus the intra-molecular atom pairs the model uses."""

    def __init__(self, frames, references, dtype):
        self.species = torch.cat([s for s, _, _, _ in frames])
        self.batch = torch.cat([torch.full((len(s),), m) for m, (s, _, _, _) in enumerate(frames)])
        self.pos = torch.cat([p for _, p, _, _ in frames]).to(dtype)
        self.forces = torch.cat([f for _, _, f, _ in frames]).to(dtype)
        energy = torch.tensor([e for _, _, _, e in frames], dtype=torch.float64)
        reference = torch.zeros(len(frames), dtype=torch.float64).index_add(0, self.batch, references[self.species])
        self.energy = (energy - reference).to(dtype)
        # Validated once per batch; every loss below takes it instead of the raw vector.
        self.layout = physcon.Batch(self.batch, len(frames))
        same = self.batch.unsqueeze(0) == self.batch.unsqueeze(1)
        self.i, self.j = torch.nonzero(same & ~torch.eye(len(self.batch), dtype=torch.bool), as_tuple=True)

    def to(self, device):
        for name in ["species", "batch", "pos", "forces", "energy", "i", "j"]:
            setattr(self, name, getattr(self, name).to(device))
        self.layout = physcon.Batch(self.batch, self.layout.num_molecules)
        return self


# ---------------------------------------------------------------------------
# Model


def radial(r, centres):
    return torch.exp(-((r.unsqueeze(1) - centres) ** 2) / 0.25)


class Model(nn.Module):
    """An energy head (invariant: species and distances) and a noise predictor
    (equivariant: a weighted sum of relative positions), SiLU throughout so
    that the stationarity loss's Hessian-vector products exist."""

    def __init__(self, hidden=32, basis=16):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.7, 5.0, basis))
        self.embed = nn.Embedding(119, hidden)
        self.energy_mlp = nn.Sequential(
            nn.Linear(hidden + basis, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1)
        )
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden + basis + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1)
        )

    def energy(self, pos, b):
        """Molecule energies ``[B]`` (eV, above the atomic references)."""
        d = pos[b.j] - pos[b.i]
        r = (d * d).sum(dim=1).sqrt()
        env = pos.new_zeros(pos.shape[0], self.centres.numel()).index_add(0, b.i, radial(r, self.centres))
        h = torch.cat([self.embed(b.species).to(pos.dtype), env], dim=1)
        e_atom = self.energy_mlp(h).squeeze(1)
        return pos.new_zeros(b.layout.num_molecules).index_add(0, b.batch, e_atom)

    def noise(self, x_t, sigma_atoms, b):
        """Noise prediction ``[N, 3]``: ``sum_j w_ij (x_i - x_j)``, centre-of-mass free."""
        d = x_t[b.i] - x_t[b.j]
        r = (d * d).sum(dim=1).sqrt()
        h = self.embed(b.species).to(x_t.dtype)
        feats = torch.cat([h[b.i], h[b.j], radial(r, self.centres), sigma_atoms[b.i].unsqueeze(1)], dim=1)
        eps = x_t.new_zeros(x_t.shape).index_add(0, b.i, self.edge_mlp(feats) * d)
        return eps - physcon_centroid(eps, b)[b.batch]


def physcon_centroid(x, b):
    counts = b.layout.counts.to(x.dtype).unsqueeze(1)
    return x.new_zeros(b.layout.num_molecules, 3).index_add(0, b.batch, x) / counts


# ---------------------------------------------------------------------------
# The step's loss: one module, one forward


class StepLoss(nn.Module):
    """The whole training loss of a step as one module's forward.

    This is what DDP wraps: the losses evaluate the energy head several times
    (and differentiate it twice), but DDP sees one forward per backward.
    """

    def __init__(self, model, kt, weights):
        super().__init__()
        self.model = model
        self.weights = weights
        self.energy_loss = physcon.EnergyLoss("mse", per_atom=True)
        self.force_loss = physcon.ForceLoss()
        self.denoising = physcon.DenoisingLoss()
        # The energy head is a frozen teacher for both consistency terms (the
        # default flow): they train the noise predictor only.
        self.optimality = physcon.StationarityLoss(flow="to_structure")
        self.score = physcon.ScoreConsistency(kt, flow="to_structure")

    def forward(self, b, eps, sigma):
        energy = lambda pos: self.model.energy(pos, b)  # noqa: E731  (a closure over the batch)
        e, f = physcon.energy_and_forces(energy, b.pos, b.layout, create_graph=True)
        alpha = (1 - sigma**2).sqrt()
        level = physcon.NoiseLevel(alpha, sigma)
        x0 = b.pos - physcon_centroid(b.pos, b)[b.batch]
        x_t = alpha[b.batch].unsqueeze(1) * x0 + sigma[b.batch].unsqueeze(1) * eps
        eps_hat = self.model.noise(x_t, sigma[b.batch], b)
        x0_hat = (x_t - sigma[b.batch].unsqueeze(1) * eps_hat) / alpha[b.batch].unsqueeze(1)
        terms = {
            "energy": self.energy_loss(e, b.energy, b.layout),
            "forces": self.force_loss(f, b.forces, b.layout),
            "denoising": self.denoising(eps_hat, eps, b.layout),
            "optimality": self.optimality(energy, x0_hat, b.layout),
            "score": self.score(eps_hat, level, b.layout, energy=energy, clean=x0),
        }
        total = sum(self.weights[k] * v for k, v in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}


# ---------------------------------------------------------------------------
# Training


def global_noise(seed, step, frames, dtype):
    """The step's noise for the whole global batch, from a generator seeded by
    (seed, step): every rank draws the same and takes its own slice."""
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    atoms = sum(len(s) for s, _, _, _ in frames)
    eps = torch.randn(atoms, 3, generator=g, dtype=torch.float64)
    sigma = 0.02 + 0.18 * torch.rand(len(frames), generator=g, dtype=torch.float64)
    return eps.to(dtype), sigma.to(dtype)


def centred_noise(eps, frames):
    """Each molecule's noise with its centroid removed (coordinates are centre-of-mass free)."""
    out, start = [], 0
    for s, _, _, _ in frames:
        block = eps[start : start + len(s)]
        out.append(block - block.mean(dim=0))
        start += len(s)
    return torch.cat(out)


def average_gradients(params, world):
    """``--recipe allreduce``: one all_reduce of all gradients, flattened, then / world."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    parser.add_argument("--data", default=os.path.join(root, "data", "train.extxyz.gz"))
    parser.add_argument("--frames", type=int, default=256, help="frames read from the data file")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16, help="molecules per rank and step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--kelvin", type=float, default=300.0, help="kT of score consistency, in K")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--recipe", choices=["ddp", "allreduce"], default="ddp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--save", help="write the final parameters to SAVE.rank<r>.pt")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)

    frames = read_extxyz(args.data, args.frames)
    references = atomic_references(frames)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = Model().to(device=device, dtype=dtype)
    weights = {"energy": 1.0, "forces": 10.0, "denoising": 1.0, "optimality": 0.1, "score": 1.0}
    step_loss = StepLoss(model, physcon.kelvin_to_kt(args.kelvin), weights)
    if distributed and args.recipe == "ddp":
        # Gradients are averaged in DDP's buckets during loss.backward().
        trained = nn.parallel.DistributedDataParallel(step_loss, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        trained = step_loss
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    params = list(model.parameters())
    order = torch.randperm(len(frames), generator=torch.Generator().manual_seed(args.seed)).tolist()

    start = time.perf_counter()
    for step in range(args.steps):
        # The global batch (world * batch_size molecules) and its noise; this rank's slice.
        size = world * args.batch_size
        chosen = [frames[order[(step * size + k) % len(frames)]] for k in range(size)]
        eps_all, sigma_all = global_noise(args.seed, step, chosen, dtype)
        eps_all = centred_noise(eps_all, chosen)
        mine = slice(rank * args.batch_size, (rank + 1) * args.batch_size)
        first_atom = sum(len(s) for s, _, _, _ in chosen[: mine.start])
        local = chosen[mine]
        atoms = sum(len(s) for s, _, _, _ in local)
        b = Batch(local, references, dtype).to(device)
        eps = eps_all[first_atom : first_atom + atoms].to(device)
        sigma = sigma_all[mine].to(device)

        optimiser.zero_grad(set_to_none=False)
        total, terms = trained(b, eps, sigma)
        total.backward()
        if distributed and args.recipe == "allreduce":
            average_gradients(params, world)
        optimiser.step()
        if rank == 0 and (step % args.log_every == 0 or step == args.steps - 1):
            parts = "  ".join(f"{k} {v.item():.4g}" for k, v in terms.items())
            print(f"step {step:4d}  total {total.item():.4g}  {parts}", flush=True)
    if rank == 0:
        print(f"{args.steps} steps on {world} process(es) in {time.perf_counter() - start:.1f} s", flush=True)
    if args.save:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, f"{args.save}.rank{rank}.pt")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
