//! The reference model: a shared E(3)-equivariant encoder (EGNN-style, fully
//! connected within each molecule, bond orders as edge features, a
//! diffusion-time embedding) with two heads:
//!
//! - energy: a sum of atomic contributions plus fitted atomic reference
//!   energies, invariant and twice differentiable (SiLU, smooth radial basis);
//! - noise (eps): `eps_i = sum_j (x_i - x_j) / (|x_i - x_j| + 1) w_ij`, with
//!   `w_ij` invariant, made centre-of-mass free per molecule: equivariant.
//!
//! It is used only through physcon's public API (`EnergyModel`, `Denoiser`).

use std::collections::HashMap;

use crate::{Error, Result};
use physcon::geometry::pairs_within;
use physcon::{AtomicReferences, BatchLayout, MolBatch};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Elements the model knows (the dataset's): H C N O F S Cl.
pub const ELEMENTS: [i64; 7] = [1, 6, 7, 8, 9, 16, 17];

/// Directed atom pairs one [`Graph`] may hold: refused above, before any
/// allocation (a 10,001-atom molecule is 10⁸ pairs, gigabytes per feature).
/// Training batches stay far below (256 molecules of 40 atoms: 4·10⁵).
pub const MAX_GRAPH_PAIRS: i64 = 1 << 22;

/// Bond-order classes of an edge: none, single, double, triple, aromatic.
const BOND_CLASSES: i64 = 5;

/// Sinusoidal frequencies of the time embedding.
const TIME_FREQUENCIES: i64 = 8;

/// Sizes of the model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Width of node and edge features.
    pub hidden: i64,
    /// Message-passing layers of the shared encoder.
    pub layers: i64,
    /// Gaussian radial basis functions on [0, `rbf_max`] Å.
    pub rbf: i64,
    /// Largest centre of the radial basis (Å).
    pub rbf_max: f64,
    /// Whether the energy head has an encoder of its own (same sizes) instead of
    /// sharing the denoiser's (absent in checkpoints from before: shared).
    #[serde(default)]
    pub separate_energy_encoder: bool,
    /// Smooth cutoff of the messages (Å): each pair's message is scaled by
    /// `(1 + cos(π d / cutoff)) / 2` below `cutoff` and 0 beyond, so an atom's
    /// features depend on its neighbourhood only; 0 is no cutoff (absent in
    /// checkpoints from before: none).
    #[serde(default)]
    pub cutoff: f64,
}

impl ModelConfig {
    /// Checks the sizes.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first size that is not at least 1,
    /// or an `rbf_max` that is not positive and finite.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("model.hidden", self.hidden),
            ("model.layers", self.layers),
            ("model.rbf", self.rbf),
        ] {
            if value < 1 {
                return Err(Error::Invalid {
                    name,
                    reason: format!("must be at least 1, got {value}"),
                });
            }
        }
        if !(self.rbf_max.is_finite() && self.rbf_max > 0.0) {
            return Err(Error::Invalid {
                name: "model.rbf_max",
                reason: format!("must be positive and finite (Å), got {}", self.rbf_max),
            });
        }
        if !(self.cutoff.is_finite() && self.cutoff >= 0.0) {
            return Err(Error::Invalid {
                name: "model.cutoff",
                reason: format!("must be 0 (none) or positive and finite (Å), got {}", self.cutoff),
            });
        }
        Ok(())
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            hidden: 64,
            layers: 3,
            rbf: 16,
            rbf_max: 6.0,
            separate_energy_encoder: false,
            cutoff: 0.0,
        }
    }
}

/// The topology of a batch, independent of positions: atom types, directed
/// atom pairs within molecules and their bond-order features.
pub struct Graph {
    pub layout: BatchLayout,
    element: Tensor,
    /// Receiving atom `i` of each directed pair.
    receiver: Tensor,
    /// Sending atom `j` of each directed pair.
    sender: Tensor,
    bond: Tensor,
    inv_neighbours: Tensor,
}

impl Graph {
    /// Featurises a batch for features of `kind`.
    ///
    /// # Errors
    /// An element outside [`ELEMENTS`] (the dataset does not match the model).
    pub fn new(batch: &MolBatch, kind: Kind) -> Result<Self> {
        let layout = batch.layout().clone();
        let device = layout.device();
        let species = Vec::<i64>::try_from(&batch.species().to_device(Device::Cpu))?;
        let element = species
            .iter()
            .map(|z| {
                ELEMENTS
                    .iter()
                    .position(|e| e == z)
                    .map(|k| k as i64)
                    .ok_or_else(|| Error::Invalid {
                        name: "species",
                        reason: format!("element {z} is not one the model knows ({ELEMENTS:?})"),
                    })
            })
            .collect::<Result<Vec<i64>>>()?;
        let counts = layout.counts_host();
        let pairs: i64 = counts.iter().map(|&n| n * (n - 1)).sum();
        if pairs > MAX_GRAPH_PAIRS {
            return Err(Error::Invalid {
                name: "batch",
                reason: format!(
                    "{pairs} atom pairs (largest molecule: {} atoms) is more than the {MAX_GRAPH_PAIRS} \
                     a graph holds: every two atoms of a molecule are paired, and the pairs' features \
                     would not fit in memory",
                    counts.iter().max().copied().unwrap_or(0)
                ),
            });
        }
        let (i, j) = pairs_within(&layout)?;
        let (i, j) = (
            Vec::<i64>::try_from(&i.to_device(Device::Cpu))?,
            Vec::<i64>::try_from(&j.to_device(Device::Cpu))?,
        );
        let mut order: HashMap<(i64, i64), i64> = HashMap::new();
        if let Some(bonds) = batch.bonds() {
            let index = Vec::<i64>::try_from(&bonds.index().to_device(Device::Cpu).reshape([-1]))?;
            let orders = Vec::<i64>::try_from(&bonds.order().to_device(Device::Cpu))?;
            for (pair, &o) in index.chunks(2).zip(&orders) {
                order.insert((pair[0].min(pair[1]), pair[0].max(pair[1])), o);
            }
        }
        let (mut receiver, mut sender, mut class) = (Vec::new(), Vec::new(), Vec::new());
        for (&a, &b) in i.iter().zip(&j) {
            let o = order.get(&(a.min(b), a.max(b))).copied().unwrap_or(0);
            receiver.extend([a, b]);
            sender.extend([b, a]);
            class.extend([o, o]);
        }
        let counts = layout.counts().to_kind(kind);
        let inv = (counts - 1.0).clamp_min(1.0).reciprocal();
        Ok(Self {
            element: Tensor::from_slice(&element).to_device(device),
            receiver: Tensor::from_slice(&receiver).to_device(device),
            sender: Tensor::from_slice(&sender).to_device(device),
            bond: Tensor::from_slice(&class)
                .to_device(device)
                .one_hot(BOND_CLASSES)
                .to_kind(kind),
            inv_neighbours: inv.index_select(0, layout.batch()).unsqueeze(1),
            layout,
        })
    }
}

/// One message-passing layer. The first edge map `W [h_i, h_j, rbf_ij, bond_ij] + b`
/// is split into `W_r h_i + W_s h_j + W_e [rbf_ij, bond_ij] + b`, with the node
/// terms computed per atom and gathered: the same function at ~1/n the cost.
struct Layer {
    receiver: nn::Linear,
    sender: nn::Linear,
    edge: nn::Linear,
    edge2: nn::Linear,
    node1: nn::Linear,
    node2: nn::Linear,
}

impl Layer {
    fn new(p: nn::Path, c: &ModelConfig) -> Self {
        let h = c.hidden;
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        Self {
            receiver: nn::linear(&p / "receiver", h, h, Default::default()),
            sender: nn::linear(&p / "sender", h, h, no_bias),
            edge: nn::linear(&p / "edge", c.rbf + BOND_CLASSES, h, no_bias),
            edge2: nn::linear(&p / "edge2", h, h, Default::default()),
            node1: nn::linear(&p / "node1", 2 * h, h, Default::default()),
            node2: nn::linear(&p / "node2", h, h, Default::default()),
        }
    }
}

/// Message passing from atom types, positions and (for the denoiser) the
/// diffusion time to atom features.
struct Encoder {
    embed: nn::Embedding,
    /// The time embedding; `None` for an energy-only encoder (always at t = 0).
    time: Option<nn::Linear>,
    layers: Vec<Layer>,
}

impl Encoder {
    fn new(p: &nn::Path, config: &ModelConfig, with_time: bool) -> Self {
        let h = config.hidden;
        Self {
            embed: nn::embedding(p / "embed", ELEMENTS.len() as i64, h, Default::default()),
            time: with_time.then(|| nn::linear(p / "time", 2 * TIME_FREQUENCIES, h, Default::default())),
            layers: (0..config.layers)
                .map(|k| Layer::new(p / format!("layer{k}"), config))
                .collect(),
        }
    }
}

/// Encoder, energy head and eps head; the energy head has an encoder of its
/// own with [`ModelConfig::separate_energy_encoder`].
pub struct Model {
    config: ModelConfig,
    encoder: Encoder,
    energy_encoder: Option<Encoder>,
    energy1: nn::Linear,
    energy2: nn::Linear,
    eps1: nn::Linear,
    eps2: nn::Linear,
    /// Per-element reference energies (eV), fitted by least squares, not trained.
    references: Tensor,
    steps: i64,
}

/// What the encoder leaves for the heads.
struct Encoded {
    h: Tensor,
    message: Tensor,
    diff: Tensor,
    dist: Tensor,
}

impl Model {
    /// A freshly initialised model under `p` for a diffusion of `steps` steps.
    pub fn new(p: &nn::Path, config: ModelConfig, steps: i64) -> Self {
        let h = config.hidden;
        let references = p.zeros_no_train("references", &[ELEMENTS.len() as i64]);
        Self {
            // The shared encoder's variables keep the root names checkpoints always had.
            encoder: Encoder::new(p, &config, true),
            energy_encoder: config
                .separate_energy_encoder
                .then(|| Encoder::new(&(p / "energy_encoder"), &config, false)),
            energy1: nn::linear(p / "energy1", h, h, Default::default()),
            energy2: nn::linear(p / "energy2", h, 1, Default::default()),
            eps1: nn::linear(p / "eps1", h, h, Default::default()),
            eps2: nn::linear(p / "eps2", h, 1, Default::default()),
            references,
            config,
            steps,
        }
    }

    /// Sets the atomic reference energies (eV) from a fit.
    ///
    /// # Errors
    /// An element of [`ELEMENTS`] the fit does not cover gets 0 (it never
    /// occurred in training), so there is no error path besides libtorch's.
    pub fn set_references(&mut self, refs: &AtomicReferences) -> Result<()> {
        let values: Vec<f64> = ELEMENTS.iter().map(|&z| refs.get(z).unwrap_or(0.0)).collect();
        let values = Tensor::from_slice(&values)
            .to_kind(self.references.kind())
            .to_device(self.references.device());
        tch::no_grad(|| self.references.copy_(&values));
        Ok(())
    }

    /// Atom features from `encoder`; `t_fraction` is t/T per molecule, or `None`
    /// for an energy-only encoder.
    fn encode(&self, encoder: &Encoder, g: &Graph, pos: &Tensor, t_fraction: Option<&Tensor>) -> Encoded {
        let kind = pos.kind();
        let diff = pos.index_select(0, &g.receiver) - pos.index_select(0, &g.sender);
        // Pairs are i != j, so the distance is positive except for coincident atoms; the
        // offset keeps its derivatives finite even then.
        let dist = (diff.square().sum_dim_intlist(1, false, kind) + 1e-8).sqrt();
        let centres = Tensor::linspace(0.0, self.config.rbf_max, self.config.rbf, (kind, pos.device()));
        let width = self.config.rbf_max / (self.config.rbf - 1) as f64;
        let rbf = (-(dist.unsqueeze(1) - centres).square() / (2.0 * width * width)).exp();
        let mut h = encoder.embed.forward(&g.element);
        if let (Some(time), Some(t_fraction)) = (&encoder.time, t_fraction) {
            let freqs = (Tensor::arange(TIME_FREQUENCIES, (kind, pos.device())) * 2f64.ln()).exp()
                * std::f64::consts::PI;
            let angles = t_fraction.unsqueeze(1) * freqs;
            let time = time.forward(&Tensor::cat(&[angles.sin(), angles.cos()], 1));
            h = &h + time.index_select(0, g.layout.batch());
        }
        let edge_features = Tensor::cat(&[rbf, g.bond.shallow_clone()], 1);
        // The cosine envelope and its derivative vanish at the cutoff, so energies
        // and forces stay continuous as a pair crosses it (the curvature jumps there).
        let envelope = (self.config.cutoff > 0.0).then(|| {
            let x = (&dist / self.config.cutoff).clamp_max(1.0);
            ((x * std::f64::consts::PI).cos() + 1.0).unsqueeze(1) * 0.5
        });
        let mut message = Tensor::zeros([0], (kind, pos.device()));
        for layer in &encoder.layers {
            let pre = layer.receiver.forward(&h).index_select(0, &g.receiver)
                + layer.sender.forward(&h).index_select(0, &g.sender)
                + layer.edge.forward(&edge_features);
            message = layer.edge2.forward(&pre.silu()).silu();
            if let Some(envelope) = &envelope {
                message = &message * envelope;
            }
            let aggregate = Tensor::zeros_like(&h).index_add(0, &g.receiver, &message) * &g.inv_neighbours;
            h = &h
                + layer
                    .node2
                    .forward(&layer.node1.forward(&Tensor::cat(&[&h, &aggregate], 1)).silu());
        }
        Encoded {
            h,
            message,
            diff,
            dist,
        }
    }

    /// Molecule energies `[B]` (eV) at positions `[N, 3]` (Å).
    ///
    /// # Errors
    /// Positions that do not fit the graph's layout.
    pub fn energy(&self, g: &Graph, pos: &Tensor) -> physcon::Result<Tensor> {
        let e = match &self.energy_encoder {
            Some(encoder) => self.encode(encoder, g, pos, None),
            None => {
                let zero_time = Tensor::zeros([g.layout.num_molecules()], (pos.kind(), pos.device()));
                self.encode(&self.encoder, g, pos, Some(&zero_time))
            }
        };
        let atomic = self
            .energy2
            .forward(&self.energy1.forward(&e.h).silu())
            .squeeze_dim(1)
            + self.references.index_select(0, &g.element);
        g.layout.sum(&atomic)
    }

    /// Predicted noise `[N, 3]` at noised positions and steps `t: [B]` (i64).
    ///
    /// # Errors
    /// Positions that do not fit the graph's layout.
    pub fn eps(&self, g: &Graph, x_t: &Tensor, t: &Tensor) -> physcon::Result<Tensor> {
        let t_fraction = t.to_kind(x_t.kind()) / self.steps as f64;
        let e = self.encode(&self.encoder, g, x_t, Some(&t_fraction));
        let w = self.eps2.forward(&self.eps1.forward(&e.message).silu());
        let vectors = &e.diff / (e.dist.unsqueeze(1) + 1.0) * w;
        let eps = Tensor::zeros_like(x_t).index_add(0, &g.receiver, &vectors) * &g.inv_neighbours;
        g.layout.centre(&eps)
    }

    /// The energy head as a physcon [`physcon::EnergyModel`] over one graph.
    pub fn energy_model<'a>(&'a self, g: &'a Graph) -> impl Fn(&Tensor) -> physcon::Result<Tensor> + 'a {
        move |pos: &Tensor| self.energy(g, pos)
    }

    /// The eps head as a physcon [`physcon::diffusion::Denoiser`] over one graph.
    pub fn denoiser<'a>(&'a self, g: &'a Graph) -> impl Fn(&Tensor, &Tensor) -> physcon::Result<Tensor> + 'a {
        move |x: &Tensor, t: &Tensor| self.eps(g, x, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use physcon::data::{read_extxyz, Frame};
    use physcon::testing::{check_energy_model, ModelCheck};

    fn frames() -> Vec<Frame> {
        read_extxyz(crate::repo_root().join("tests/fixtures/extxyz/valid_small.extxyz")).unwrap()
    }

    fn model() -> (std::sync::MutexGuard<'static, ()>, nn::VarStore, Model) {
        model_with(false, 0.0)
    }

    /// A small model in f64, its energy encoder shared or not, with a message cutoff or not.
    fn model_with(separate: bool, cutoff: f64) -> (std::sync::MutexGuard<'static, ()>, nn::VarStore, Model) {
        let rng = crate::rng_lock();
        tch::set_num_threads(1);
        tch::manual_seed(3);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = Model::new(
            &vs.root(),
            ModelConfig {
                hidden: 16,
                layers: 2,
                rbf: 8,
                rbf_max: 5.0,
                separate_energy_encoder: separate,
                cutoff,
            },
            1000,
        );
        vs.set_kind(Kind::Double);
        (rng, vs, model)
    }

    /// A molecule whose atom pairs would not fit in memory is refused before
    /// any pair is made, naming its size; one just under the limit is featurised.
    #[test]
    fn graphs_beyond_the_pair_limit_are_refused() {
        let big = |n: usize| physcon::Molecule {
            species: vec![6; n],
            pos: (0..n).map(|a| [a as f64 * 1.5, 0.0, 0.0]).collect(),
            bonds: Vec::new(),
        };
        let batch = MolBatch::from_molecules(&[big(2049)], Kind::Float, Device::Cpu).unwrap();
        match Graph::new(&batch, Kind::Float) {
            Err(Error::Invalid {
                name: "batch",
                reason,
            }) => {
                assert!(
                    reason.contains("4196352 atom pairs") && reason.contains("2049 atoms"),
                    "{reason}"
                )
            }
            _ => panic!("a graph of 2049 atoms was built"),
        }
        let batch = MolBatch::from_molecules(&[big(200)], Kind::Float, Device::Cpu).unwrap();
        assert!(Graph::new(&batch, Kind::Float).is_ok());
    }

    fn rotation() -> Tensor {
        physcon::testing::rotation([0.5, -0.3, 0.7, 0.41]).unwrap()
    }

    /// The fixture's frames in one batch, and the same batch with atoms permuted within molecules.
    fn batches() -> (MolBatch, MolBatch, Tensor) {
        let frames = frames();
        let molecules: Vec<_> = frames.iter().map(Frame::molecule).collect();
        let batch = MolBatch::from_molecules(&molecules, Kind::Double, Device::Cpu).unwrap();
        let permuted: Vec<_> = molecules
            .iter()
            .map(|m| {
                let n = m.species.len();
                let perm: Vec<usize> = (0..n).rev().collect(); // new atom k is old atom n-1-k
                let mut inv = vec![0; n];
                for (k, &old) in perm.iter().enumerate() {
                    inv[old] = k;
                }
                physcon::Molecule {
                    species: perm.iter().map(|&o| m.species[o]).collect(),
                    pos: perm.iter().map(|&o| m.pos[o]).collect(),
                    bonds: m.bonds.iter().map(|&(i, j, o)| (inv[i], inv[j], o)).collect(),
                }
            })
            .collect();
        let permuted_batch = MolBatch::from_molecules(&permuted, Kind::Double, Device::Cpu).unwrap();
        // Index map: row k of the permuted batch is row perm_index[k] of the original.
        let mut index = Vec::new();
        let mut offset = 0i64;
        for m in &molecules {
            let n = m.species.len() as i64;
            index.extend((0..n).rev().map(|k| offset + k));
            offset += n;
        }
        (batch, permuted_batch, Tensor::from_slice(&index))
    }

    #[test]
    fn eps_is_equivariant_and_centre_of_mass_free() {
        let (_rng, _vs, model) = model();
        let (batch, permuted, index) = batches();
        let g = Graph::new(&batch, Kind::Double).unwrap();
        let gp = Graph::new(&permuted, Kind::Double).unwrap();
        let rot = rotation();
        let shift = Tensor::from_slice(&[1.5f64, -2.0, 0.3]);
        let moved = batch.pos().matmul(&rot.tr()) + &shift;
        let t = Tensor::from_slice(&[10i64, 200, 500, 999]);

        let eps = model.eps(&g, batch.pos(), &t).unwrap();
        let eps_moved = model.eps(&g, &moved, &t).unwrap();
        assert!((eps.matmul(&rot.tr()) - eps_moved).abs().max().double_value(&[]) < 1e-10);
        let eps_perm = model.eps(&gp, permuted.pos(), &t).unwrap();
        assert!(
            (eps.index_select(0, &index) - eps_perm)
                .abs()
                .max()
                .double_value(&[])
                < 1e-10
        );
        let centroid = g.layout.mean(&eps).unwrap();
        assert!(
            centroid.abs().max().double_value(&[]) < 1e-12,
            "eps is centre-of-mass free"
        );
        assert!(
            eps.abs().max().double_value(&[]) > 1e-6,
            "eps is not trivially zero"
        );
    }

    /// The energy head passes the check every physcon energy model should:
    /// invariances, no gradient between molecules, forces against finite
    /// differences and twice differentiable (for the stationarity loss).
    #[test]
    fn energy_passes_the_model_check() {
        let (_rng, _vs, model) = model();
        let (batch, _, _) = batches();
        let energy = |b: &MolBatch| -> physcon::Result<Tensor> {
            model.energy(&Graph::new(b, Kind::Double)?, b.pos())
        };
        let report = check_energy_model(&energy, &batch, &ModelCheck::default()).unwrap();
        assert!(report.passed(), "{report}");
    }

    /// The energy head's variants pass the same check: an encoder of its own, and
    /// a cutoff (2.5 Å) that some pairs of the fixture's molecules lie beyond.
    /// With its own encoder the energy does not move when the denoiser's does.
    #[test]
    fn energy_variants_pass_the_model_check() {
        let (batch, _, _) = batches();
        for (separate, cutoff) in [(true, 0.0), (false, 2.5), (true, 2.5)] {
            let (_rng, vs, model) = model_with(separate, cutoff);
            let energy = |b: &MolBatch| -> physcon::Result<Tensor> {
                model.energy(&Graph::new(b, Kind::Double)?, b.pos())
            };
            let report = check_energy_model(&energy, &batch, &ModelCheck::default()).unwrap();
            assert!(report.passed(), "separate {separate}, cutoff {cutoff}: {report}");
            let g = Graph::new(&batch, Kind::Double).unwrap();
            let before = model.energy(&g, batch.pos()).unwrap();
            let shared = vs
                .variables()
                .into_iter()
                .filter(|(name, _)| name.starts_with("layer0."));
            tch::no_grad(|| shared.for_each(|(_, mut v)| v.copy_(&(&v + 0.1))));
            let moved = (model.energy(&g, batch.pos()).unwrap() - before)
                .abs()
                .max()
                .double_value(&[]);
            assert_eq!(
                moved == 0.0,
                separate,
                "separate {separate}: the energy moved by {moved}"
            );
        }
        assert!(ModelConfig {
            cutoff: -1.0,
            ..ModelConfig::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn unknown_elements_are_rejected() {
        let mut frame = frames().remove(0);
        frame.species[0] = 35; // Br
        let batch = MolBatch::from_molecules(&[frame.molecule()], Kind::Float, Device::Cpu).unwrap();
        assert!(matches!(
            Graph::new(&batch, Kind::Float),
            Err(Error::Invalid { name: "species", .. })
        ));
    }
}
