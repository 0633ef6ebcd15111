"""Train a MACE model with physcon's physical-consistency losses (an example of wiring).

A small MACE (``pip install mace-torch``) learns GFN2-xTB energies and forces
of a few molecules of ``data/train.extxyz.gz`` (their 300 K Boltzmann frames);
a toy noise predictor learns the denoising loss and the two consistency laws
with MACE as a frozen teacher (the default flow): optimality
(``StationarityLoss``: MACE's forces vanish at the structure generated from the
noise prediction) and score consistency (``ScoreConsistency``: the small-noise
prediction equals MACE's forces / kT). From the repository root::

    python examples/python/mace_consistency.py --steps 5 --molecules 8 --device cpu

The point is the wrapper ``mace_energy``: physcon wants an energy callable
``pos [N, 3] -> [B]`` and calls it with positions of its own (detached copies,
generated structures), so the callable must put the ``pos`` it is given into
MACE's data dict; closing over a dict that holds other positions makes physcon
raise ``ValueError`` ("does not depend on the positions").
"""

import argparse
import gzip
import os
import re
import time
import warnings

warnings.filterwarnings("ignore", message=".*(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD|TorchScript type system)")

import mace  # noqa: F401  (before e3nn: sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which e3nn 0.4.4 needs on torch >= 2.6)
import torch
from e3nn import o3
from mace.modules import MACE, RealAgnosticResidualInteractionBlock
from torch import nn

import physcon

SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "S": 16, "Cl": 17}
ELEMENTS = sorted(SYMBOLS.values())  # MACE's element table: every element of the shipped data
R_MAX = 5.0  # Å, MACE's cutoff
KELVIN = 300.0  # the frames used are Boltzmann samples at 300 K (data/README.md)


def read_frames(path, limit):
    """The first ``limit`` frames of the extxyz file (format: data/README.md):
    ``(kelvin, Z [n], pos [n, 3] Å, forces [n, 3] eV/Å, energy eV)``, kelvin NaN for unperturbed frames."""
    frames = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        while len(frames) < limit and (count := f.readline()).strip():
            keys = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', f.readline()))
            rows = [f.readline().split() for _ in range(int(count))]
            z = torch.tensor([SYMBOLS[r[0]] for r in rows])
            values = torch.tensor([[float(v) for v in r[1:7]] for r in rows], dtype=torch.float64)
            kelvin = float(keys.get("temperature", "nan"))
            frames.append((kelvin, z, values[:, :3], values[:, 3:], float(keys["energy"])))
    return frames


def atomic_energies(frames):
    """Per-element reference energies E0 (eV), least squares over the frames, in MACE's element order."""
    counts = torch.stack([torch.bincount(z, minlength=18)[ELEMENTS] for _, z, *_ in frames]).double()
    energies = torch.tensor([e for *_, e in frames], dtype=torch.float64)
    return torch.linalg.lstsq(counts, energies.unsqueeze(1)).solution.squeeze(1).numpy()


def mace_graph(z, batch, device):
    """MACE's data dict for a batch of molecules, everything but the positions.

    Built once per batch. The edges are all ordered pairs of atoms within a
    molecule (no pbc: zero shifts and cell): pairs beyond ``R_MAX`` get weight
    zero from MACE's polynomial cutoff, so the same edges stay right at the
    moved structures physcon evaluates (noised, generated)."""
    same = batch.unsqueeze(0) == batch.unsqueeze(1)
    sender, receiver = torch.nonzero(same & ~torch.eye(len(z), dtype=torch.bool), as_tuple=True)
    num_molecules = int(batch.max()) + 1
    one_hot = nn.functional.one_hot(torch.searchsorted(torch.tensor(ELEMENTS), z), len(ELEMENTS))
    graph = {
        "edge_index": torch.stack([sender, receiver]),  # [2, E]: row 0 sender, row 1 receiver
        "shifts": torch.zeros(len(sender), 3),
        "unit_shifts": torch.zeros(len(sender), 3),
        "cell": torch.zeros(3 * num_molecules, 3),
        "batch": batch,
        "ptr": torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(batch).cumsum(0)]),
        "node_attrs": one_hot.to(torch.get_default_dtype()),
    }
    return {k: v.to(device) for k, v in graph.items()}


def mace_energy(model, graph):
    """physcon's energy callable ``pos [N, 3] -> [B]`` (eV) for a MACE model and a batch graph.

    The ``pos`` physcon gives goes into a fresh copy of the dict (MACE's forward
    may write into it); ``{**graph, "positions": captured}`` would raise physcon's
    ValueError. MACE's own forces are switched off: physcon takes the derivatives
    it needs (forces, Hessian-vector products) itself. (MACE calls
    ``positions.requires_grad_(True)``: a no-op here, physcon passes tensors that
    already require grad.)"""

    def energy(pos):
        return model({**graph, "positions": pos}, compute_force=False)["energy"]

    return energy


class NoisePredictor(nn.Module):
    """A toy noise predictor (a stand-in for a diffusion model; this example is about the wiring):
    ``eps_i = sum_j w(r_ij, sigma) (x_i - x_j)``, equivariant and, as ``w_ij = w_ji``, centre-of-mass free."""

    def __init__(self, hidden=32, basis=16):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.5, R_MAX, basis))
        self.mlp = nn.Sequential(nn.Linear(basis + 1, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight), nn.init.zeros_(self.mlp[-1].bias)  # starts at eps_hat = 0

    def forward(self, x_t, sigma_atoms, graph):
        i, j = graph["edge_index"]
        d = x_t[i] - x_t[j]
        r = d.norm(dim=1, keepdim=True)
        feats = torch.cat([torch.exp(-((r - self.centres) ** 2) / 0.25), sigma_atoms[i].unsqueeze(1)], dim=1)
        return torch.zeros_like(x_t).index_add(0, i, self.mlp(feats) * d)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--molecules", type=int, default=8, help="molecules in the (single) training batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (more oversubscribe a busy machine)")
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "data", "train.extxyz.gz"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)  # MACE's default; MACE builds its buffers in the default dtype
    device = torch.device(args.device)

    # Data: 4 frames per molecule (mmff, then perturbed at 300/450/600 K); E0s fitted on >= 64 molecules;
    # training on the 300 K frame of the first --molecules molecules (Boltzmann samples: score consistency's kT).
    frames = read_frames(args.data, 4 * max(args.molecules, 64))
    e0 = atomic_energies(frames)
    _, species, positions, forces, energies = zip(*[f for f in frames if f[0] == KELVIN][: args.molecules])
    z = torch.cat(species)
    batch = torch.cat([torch.full((len(s),), m) for m, s in enumerate(species)])
    graph = mace_graph(z, batch, device)  # the neighbour list etc., once for the batch
    batch = graph["batch"]
    pos, f_ref = torch.cat(positions).to(device), torch.cat(forces).to(device)
    e_ref = torch.tensor(energies, device=device)
    b = physcon.Batch(batch)  # validated once, passed to every loss
    i, j = graph["edge_index"]
    neighbours = ((pos[i] - pos[j]).norm(dim=1) < R_MAX).sum().item() / len(z)

    model = MACE(
        r_max=R_MAX, num_bessel=8, num_polynomial_cutoff=5, max_ell=2,
        interaction_cls=RealAgnosticResidualInteractionBlock,
        interaction_cls_first=RealAgnosticResidualInteractionBlock,
        num_interactions=2, num_elements=len(ELEMENTS), hidden_irreps=o3.Irreps("16x0e + 16x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=e0, avg_num_neighbors=neighbours,
        atomic_numbers=ELEMENTS, correlation=2, gate=nn.functional.silu, radial_MLP=[32, 32],
    ).to(device)
    denoiser = NoisePredictor().to(device)
    optimiser = torch.optim.Adam([{"params": model.parameters(), "lr": 1e-2}, {"params": denoiser.parameters(), "lr": 1e-3}])

    energy_loss, force_loss = physcon.EnergyLoss(per_atom=True), physcon.ForceLoss()
    denoising = physcon.DenoisingLoss()
    optimality = physcon.StationarityLoss()  # flow TO_STRUCTURE: MACE is a frozen teacher here
    score = physcon.ScoreConsistency(physcon.kelvin_to_kt(KELVIN))  # the same default flow
    weights = {"energy": 1.0, "forces": 10.0, "denoising": 1.0, "optimality": 0.1, "score": 1.0}
    energy = mace_energy(model, graph)  # pos [N, 3] -> [B]
    print(f"{len(species)} molecules, {len(z)} atoms, {len(i)} edges, {neighbours:.1f} neighbours within {R_MAX} Å")

    start = time.perf_counter()
    for step in range(args.steps):
        # Energy and force losses: forces with a graph, so that the force loss trains MACE (double backward).
        e, f = physcon.energy_and_forces(energy, pos, b, create_graph=True)
        # Noise the clean structure at a small variance-preserving level and predict the noise.
        sigma = 0.01 + 0.02 * torch.rand(b.num_molecules, device=device)
        alpha = (1 - sigma**2).sqrt()
        eps = physcon.com_free_noise(b, pos.dtype)
        x0 = b.centre(pos)
        x_t = alpha[batch, None] * x0 + sigma[batch, None] * eps
        eps_hat = denoiser(x_t, sigma[batch], graph)
        x0_hat = (x_t - sigma[batch, None] * eps_hat) / alpha[batch, None]  # the generated structure
        terms = {
            "energy": energy_loss(e, e_ref, b),
            "forces": force_loss(f, f_ref, b),
            "denoising": denoising(eps_hat, eps, b),
            "optimality": optimality(energy, x0_hat, b),
            "score": score(eps_hat, physcon.NoiseLevel(alpha, sigma), b, energy=energy, clean=x0),
        }
        total = sum(weights[k] * v for k, v in terms.items())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        print(f"step {step}  total {total.item():.4g}  " + "  ".join(f"{k} {v.item():.4g}" for k, v in terms.items()))
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
