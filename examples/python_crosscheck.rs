//! The Rust crate's values and gradients on fixed inputs, written to an
//! `.npz` that the Python package's test suite (`python/tests/test_rust_equality.py`)
//! recomputes with the pure-PyTorch package and holds equal to 1e-10 relative.
//!
//! ```sh
//! scripts/with-libtorch.sh cargo run --example python_crosscheck -- target/crosscheck.npz
//! ```
//!
//! The file holds the inputs (`input.*`), the parameters of three small
//! models (`param.*`: an energy model, a structure generator and a noise
//! predictor, written out again in Python from the same formulas), and per
//! quantity `<name>.value`, the cotangent `<name>.cot` and, for every tensor
//! the quantity may depend on, `<name>.grad.<tensor>`: the gradient of
//! `sum(value * cot)`, zeros where it does not depend on the tensor. Every
//! loss, flow, per-molecule reduction and helper of the library has a name
//! here; `scripts/test.sh` regenerates the file on every run.

use std::collections::BTreeMap;
use std::fs::File;

use ndarray_npy::NpzWriter;
use physcon::diffusion::{q_sample_with, NoiseLevel, NoiseSchedule};
use physcon::losses::{
    score_target, DenoisingLoss, EnergyDescentLoss, EnergyLoss, EnergyMetric, ForceLoss, Forces,
    GradientFlow, PerMolecule, ScoreConsistency, StationarityLoss,
};
use physcon::metrics::{energy_gap, energy_mae, kabsch_rmsd};
use physcon::ndarray::{ArrayD, IxDyn};
use physcon::tch::{Device, Kind, Tensor};
use physcon::{energy_and_forces, BatchLayout, EnergyModel, Temperature};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);
const HIDDEN: i64 = 8;
const BASIS: i64 = 6;
const FLOWS: [(&str, GradientFlow); 3] = [
    ("to_structure", GradientFlow::ToStructure),
    ("both", GradientFlow::Both),
    ("to_energy", GradientFlow::ToEnergy),
];

/// The energy model: `E_b = sum_{i in b} (e0[z_i] + sum_{j != i in b} phi(r_ij))`,
/// `phi(r) = silu(rbf(r) W1 + b1) . w2`, `rbf_k(r) = exp(-(r - c_k)^2)`, `c` from 0.5 to 4 Å.
struct Energy {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    e0: Tensor,
    species: Tensor,
    i: Tensor,
    j: Tensor,
    batch: Tensor,
    centres: Tensor,
    num_molecules: i64,
}

impl EnergyModel for Energy {
    fn energy(&self, pos: &Tensor) -> physcon::Result<Tensor> {
        let d = pos.index_select(0, &self.j) - pos.index_select(0, &self.i);
        let r = d.square().sum_dim_intlist(1, false, Kind::Double).sqrt();
        let rbf = (r.unsqueeze(1) - &self.centres).square().neg().exp();
        let phi = (rbf.matmul(&self.w1) + &self.b1).silu().matmul(&self.w2);
        let n = pos.size()[0];
        let e_atom =
            Tensor::zeros([n], F64).index_add(0, &self.i, &phi) + self.e0.index_select(0, &self.species);
        Ok(Tensor::zeros([self.num_molecules], F64).index_add(0, &self.batch, &e_atom))
    }
}

/// The structure generator: `R_hat = x + 0.1 silu(x G1 + g1) G2`.
fn generate(x: &Tensor, p: &Params) -> Tensor {
    x + (x.matmul(&p.g1) + &p.gb).silu().matmul(&p.g2) * 0.1
}

/// The noise predictor: `eps_hat = silu([x_t, s_atom] D1 + d1) D2`.
fn denoise(x_t: &Tensor, sigma_atoms: &Tensor, p: &Params) -> Tensor {
    let h = Tensor::cat(&[x_t.shallow_clone(), sigma_atoms.unsqueeze(1)], 1);
    (h.matmul(&p.d1) + &p.db).silu().matmul(&p.d2)
}

struct Params {
    g1: Tensor,
    gb: Tensor,
    g2: Tensor,
    d1: Tensor,
    db: Tensor,
    d2: Tensor,
}

/// Everything written, by name, and the tensors gradients are taken with respect to.
struct Out {
    arrays: BTreeMap<String, Tensor>,
    wrt: Vec<(&'static str, Tensor)>,
    cot_seed: i64,
}

impl Out {
    fn put(&mut self, name: &str, t: &Tensor) {
        self.arrays.insert(name.to_owned(), t.detach().copy());
    }

    /// `name.value`, `name.cot` and `name.grad.<tensor>` of `value`.
    fn quantity(&mut self, name: &str, value: &Tensor) -> Res<()> {
        self.cot_seed += 1;
        let cot = {
            let _guard = physcon::tch::no_grad_guard();
            physcon::tch::manual_seed(1000 + self.cot_seed);
            Tensor::randn(value.size(), F64)
        };
        self.put(&format!("{name}.value"), value);
        self.put(&format!("{name}.cot"), &cot);
        let inputs: Vec<Tensor> = self.wrt.iter().map(|(_, t)| t.shallow_clone()).collect();
        let grads = if value.requires_grad() {
            let total = (value * &cot).sum(Kind::Double);
            Tensor::f_run_backward(&[total], &inputs, true, false)?
        } else {
            inputs.iter().map(|_| Tensor::new()).collect()
        };
        for ((tensor_name, x), g) in self.wrt.clone_names().into_iter().zip(&inputs).zip(grads) {
            let g = if g.defined() { g } else { x.zeros_like() };
            self.put(&format!("{name}.grad.{tensor_name}"), &g);
        }
        Ok(())
    }

    fn per_molecule(&mut self, name: &str, per: &PerMolecule) -> Res<()> {
        self.quantity(&format!("{name}.per_molecule"), per.values())?;
        self.quantity(&format!("{name}.mean"), &per.mean()?)
    }
}

trait Names {
    fn clone_names(&self) -> Vec<&'static str>;
}

impl Names for Vec<(&'static str, Tensor)> {
    fn clone_names(&self) -> Vec<&'static str> {
        self.iter().map(|(n, _)| *n).collect()
    }
}

fn leaf(t: Tensor) -> Tensor {
    t.set_requires_grad(true)
}

fn main() -> Res<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: python_crosscheck <out.npz>")?;
    physcon::tch::set_num_threads(1);
    physcon::tch::manual_seed(20261206);

    // Three molecules of 2, 4 and 3 atoms, interleaved.
    let batch = Tensor::from_slice(&[0i64, 1, 2, 1, 0, 2, 1, 1, 2]);
    let species = Tensor::from_slice(&[1i64, 6, 8, 1, 1, 7, 6, 1, 1]);
    let layout = BatchLayout::new(&batch, 3)?;
    let host: Vec<i64> = Vec::try_from(&batch)?;
    let (mut pi, mut pj) = (Vec::new(), Vec::new());
    for (a, &ma) in host.iter().enumerate() {
        for (b, &mb) in host.iter().enumerate() {
            if a != b && ma == mb {
                pi.push(a as i64);
                pj.push(b as i64);
            }
        }
    }
    let pos = Tensor::randn([9, 3], F64) * 1.3;
    let other = &pos + Tensor::randn([9, 3], F64) * 0.2;
    let force_labels = Tensor::randn([9, 3], F64);
    let eps = Tensor::randn([9, 3], F64);
    let energies = Tensor::randn([3], F64);
    let alpha = Tensor::from_slice(&[0.999f64, 0.99, 0.98]);
    let sigma = alpha.square().neg().g_add_scalar(1.0).sqrt();

    let energy = Energy {
        w1: leaf(Tensor::randn([BASIS, HIDDEN], F64) * 0.5),
        b1: leaf(Tensor::randn([HIDDEN], F64) * 0.1),
        w2: leaf(Tensor::randn([HIDDEN], F64) * 0.5),
        e0: leaf(Tensor::randn([10], F64)),
        species: species.shallow_clone(),
        i: Tensor::from_slice(&pi),
        j: Tensor::from_slice(&pj),
        batch: batch.shallow_clone(),
        centres: Tensor::linspace(0.5, 4.0, BASIS, F64),
        num_molecules: 3,
    };
    let p = Params {
        g1: leaf(Tensor::randn([3, HIDDEN], F64) * 0.5),
        gb: leaf(Tensor::randn([HIDDEN], F64) * 0.1),
        g2: leaf(Tensor::randn([HIDDEN, 3], F64) * 0.5),
        d1: leaf(Tensor::randn([4, HIDDEN], F64) * 0.5),
        db: leaf(Tensor::randn([HIDDEN], F64) * 0.1),
        d2: leaf(Tensor::randn([HIDDEN, 3], F64) * 0.5),
    };
    let x_in = leaf(pos.copy());
    let x_t = leaf(layout.expand(&alpha)?.unsqueeze(1) * &pos + layout.expand(&sigma)?.unsqueeze(1) * &eps);
    let clean_in = leaf(other.copy());

    let mut out = Out {
        arrays: BTreeMap::new(),
        wrt: vec![
            ("w1", energy.w1.shallow_clone()),
            ("b1", energy.b1.shallow_clone()),
            ("w2", energy.w2.shallow_clone()),
            ("e0", energy.e0.shallow_clone()),
            ("g1", p.g1.shallow_clone()),
            ("gb", p.gb.shallow_clone()),
            ("g2", p.g2.shallow_clone()),
            ("d1", p.d1.shallow_clone()),
            ("db", p.db.shallow_clone()),
            ("d2", p.d2.shallow_clone()),
            ("x_in", x_in.shallow_clone()),
            ("x_t", x_t.shallow_clone()),
            ("clean_in", clean_in.shallow_clone()),
        ],
        cot_seed: 0,
    };
    for (name, t) in [
        ("input.batch", &batch),
        ("input.species", &species),
        ("input.pos", &pos),
        ("input.other", &other),
        ("input.forces", &force_labels),
        ("input.eps", &eps),
        ("input.energies", &energies),
        ("input.alpha", &alpha),
        ("input.sigma", &sigma),
        ("input.x_t", &x_t),
        ("input.pairs_i", &energy.i),
        ("input.pairs_j", &energy.j),
        ("input.centres", &energy.centres),
    ] {
        out.put(name, t);
    }
    for (name, t) in out
        .wrt
        .iter()
        .take(10)
        .map(|(n, t)| (*n, t.shallow_clone()))
        .collect::<Vec<_>>()
    {
        out.put(&format!("param.{name}"), &t);
    }

    // Optimality consistency at a generated structure, every flow.
    for (flow_name, flow) in FLOWS {
        let structure = generate(&x_in, &p);
        let loss = StationarityLoss::new().flow(flow);
        out.quantity(
            &format!("stationarity.{flow_name}.forward"),
            &loss.forward(&energy, &structure, &layout)?,
        )?;
        out.per_molecule(
            &format!("stationarity.{flow_name}"),
            &loss.forward_per_molecule(&energy, &structure, &layout)?,
        )?;
        let descent = EnergyDescentLoss::new().flow(flow);
        out.quantity(
            &format!("descent.{flow_name}.forward"),
            &descent.forward(&energy, &structure, &other, &layout)?,
        )?;
        out.per_molecule(
            &format!("descent.{flow_name}"),
            &descent.forward_per_molecule(&energy, &structure, &other, &layout)?,
        )?;
    }

    // Score consistency with the model's forces (clean structure with or without a graph) and with labels.
    let kt = Temperature::kelvin(300.0)?.kt();
    let level = NoiseLevel::new(&alpha, &sigma)?;
    for (flow_name, flow) in FLOWS {
        for generated in [false, true] {
            let eps_hat = denoise(&x_t, &layout.expand(&sigma)?, &p);
            let clean = if generated {
                generate(&clean_in, &p)
            } else {
                clean_in.shallow_clone()
            };
            let loss = ScoreConsistency::new(kt)?.flow(flow);
            let forces = Forces::Model {
                energy: &energy,
                at: &clean,
            };
            let name = format!(
                "score.model.{flow_name}.{}",
                if generated { "generated" } else { "leaf" }
            );
            out.quantity(
                &format!("{name}.forward"),
                &loss.forward(&eps_hat, &level, forces, &layout)?,
            )?;
            out.per_molecule(
                &name,
                &loss.forward_per_molecule(&eps_hat, &level, forces, &layout)?,
            )?;
        }
    }
    let sigma_only = NoiseLevel::sigma_only(&sigma)?;
    for (flow_name, flow) in &FLOWS[..2] {
        let eps_hat = denoise(&x_t, &layout.expand(&sigma)?, &p);
        let loss = ScoreConsistency::new(0.05)?.flow(*flow);
        out.per_molecule(
            &format!("score.labels.{flow_name}"),
            &loss.forward_per_molecule(&eps_hat, &sigma_only, Forces::Labels(&force_labels), &layout)?,
        )?;
    }
    out.quantity("score_target", &score_target(&force_labels, &level, kt, &layout)?)?;

    // Energies and forces, with and without the forces' graph.
    let ef = energy_and_forces(&energy, &x_in, &layout, true)?;
    out.quantity("energy_and_forces.graph.energy", &ef.energy)?;
    out.quantity("energy_and_forces.graph.forces", &ef.forces)?;
    let ef = energy_and_forces(&energy, &x_in, &layout, false)?;
    out.quantity("energy_and_forces.constant.energy", &ef.energy)?;
    out.quantity("energy_and_forces.constant.forces", &ef.forces)?;

    // Supervised losses: every metric, per atom or not, with a mask and a NaN placeholder.
    let mask = Tensor::from_slice(&[true, false, true]);
    let nan = energies.full_like(f64::NAN);
    let target = energies.where_self(&mask, &nan);
    let weights = Tensor::from_slice(&[0.5f64, 7.0, 2.0]);
    for (metric_name, metric) in [
        ("mse", EnergyMetric::Mse),
        ("l1", EnergyMetric::L1),
        ("huber", EnergyMetric::Huber { delta: 0.3 }),
    ] {
        for per_atom in [false, true] {
            let pred = energy.energy(&x_in)?;
            let loss = EnergyLoss::new(metric)?.per_atom(per_atom);
            let name = format!(
                "energy_loss.{metric_name}.{}",
                if per_atom { "per_atom" } else { "total" }
            );
            out.quantity(
                &format!("{name}.forward"),
                &loss.forward(&pred, &target, Some(&mask), &layout)?,
            )?;
            let per = loss.forward_per_molecule(&pred, &target, Some(&mask), &layout)?;
            out.per_molecule(&name, &per)?;
            out.quantity(&format!("{name}.weighted_mean"), &per.weighted_mean(&weights)?)?;
            let unmasked = loss.forward_per_molecule(&pred, &energies, None, &layout)?;
            out.per_molecule(&format!("{name}.unmasked"), &unmasked)?;
            out.quantity(
                &format!("{name}.unmasked.weighted_mean"),
                &unmasked.weighted_mean(&weights)?,
            )?;
        }
    }
    let force_mask = Tensor::from_slice(&[true, true, false]);
    let force_target = force_labels.where_self(
        &layout.expand(&force_mask)?.unsqueeze(1),
        &force_labels.full_like(f64::NAN),
    );
    let predicted = energy_and_forces(&energy, &x_in, &layout, true)?.forces;
    out.quantity(
        "force_loss.masked.forward",
        &ForceLoss::new().forward(&predicted, &force_target, Some(&force_mask), &layout)?,
    )?;
    out.per_molecule(
        "force_loss.masked",
        &ForceLoss::new().forward_per_molecule(&predicted, &force_target, Some(&force_mask), &layout)?,
    )?;
    out.per_molecule(
        "force_loss.unmasked",
        &ForceLoss::new().forward_per_molecule(&predicted, &force_labels, None, &layout)?,
    )?;
    let eps_hat = denoise(&x_t, &layout.expand(&sigma)?, &p);
    out.quantity(
        "denoising.forward",
        &DenoisingLoss::new().forward(&eps_hat, &eps, &layout)?,
    )?;
    out.per_molecule(
        "denoising",
        &DenoisingLoss::new().forward_per_molecule(&eps_hat, &eps, &layout)?,
    )?;

    // Metrics.
    out.quantity("kabsch_rmsd", &kabsch_rmsd(&generate(&x_in, &p), &pos, &layout)?)?;
    out.quantity("kabsch_rmsd.identical", &kabsch_rmsd(&x_in, &pos, &layout)?)?;
    out.quantity("energy_gap", &energy_gap(&energy, &other, &pos, &layout)?)?;
    out.quantity(
        "energy_mae.masked",
        &energy_mae(&energy.energy(&x_in)?, &target, Some(&mask), &layout)?,
    )?;

    // Diffusion: schedules and noising with given noise.
    for (name, schedule) in [
        ("cosine", NoiseSchedule::cosine(50)?),
        ("linear", NoiseSchedule::linear(50, 1e-4, 0.02)?),
    ] {
        let table: Vec<f64> = (0..=50)
            .map(|t| schedule.alpha_bar(t))
            .collect::<physcon::Result<_>>()?;
        out.put(&format!("schedule.{name}.alpha_bar"), &Tensor::from_slice(&table));
        let t = Tensor::from_slice(&[1i64, 7, 50]);
        let level = schedule.level(&t, Kind::Double)?;
        out.put(&format!("schedule.{name}.level.alpha"), level.alpha());
        out.put(&format!("schedule.{name}.level.sigma"), level.sigma());
        let noised = q_sample_with(&schedule, &x_in, &t, &eps, &layout)?;
        out.quantity(&format!("q_sample.{name}.x_t"), noised.x_t())?;
        out.quantity(&format!("q_sample.{name}.x0"), noised.x0())?;
        out.put(&format!("q_sample.{name}.eps"), noised.eps());
    }
    out.put("kelvin_to_kt.300", &Tensor::from(kt));

    let mut npz = NpzWriter::new(File::create(&path)?);
    let count = out.arrays.len();
    for (name, t) in &out.arrays {
        let t = if t.kind() == Kind::Bool {
            t.to_kind(Kind::Int64)
        } else {
            t.shallow_clone()
        };
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let flat = t.reshape([-1]);
        if t.kind() == Kind::Int64 {
            npz.add_array(
                name.as_str(),
                &ArrayD::from_shape_vec(IxDyn(&shape), Vec::<i64>::try_from(&flat)?)?,
            )?;
        } else {
            npz.add_array(
                name.as_str(),
                &ArrayD::from_shape_vec(IxDyn(&shape), Vec::<f64>::try_from(&flat)?)?,
            )?;
        }
    }
    npz.finish()?;
    eprintln!("python_crosscheck: {count} arrays written to {path}");
    Ok(())
}
