//! One full consistency stage-2 training step of the two-stage example's
//! reference model, and each of its losses alone, on fixed batches of the
//! shipped training data; the fixtures for the side-by-side PyTorch check.
//!
//! The step calls the example's own `Trainer::weights`, `Trainer::batches`
//! and `Objective::losses` (consistency arm, stage-2 weights; the `two_stage`
//! crate of `examples/two_stage/`), followed by `backward` and a plain SGD
//! update of every trainable parameter (the example's Adam and gradient
//! clipping are left out, so the PyTorch side can do exactly the same
//! arithmetic):
//!
//! 1. energy + forces (create-graph backward) on a batch of `mmff` frames,
//! 2. denoising at t uniform in 1..=T on the same batch,
//! 3. energy + forces on a batch of `xtb-perturbed` frames,
//! 4. optimality (stationarity, `ToStructure`) of the one-step structure
//!    `x0_hat(R_t)` at t in 1..=10 (one eps forward, one energy forward,
//!    a double backward),
//! 5. score consistency (model forces) at t in 1..=20 on the perturbed batch,
//! 6. `backward` of the weighted total, SGD update.
//!
//! The model (f32, preset `cpu`: hidden 64, 3 layers, 16 radial functions) and
//! the batches (the batches of the first stage-2 step of seed 0) are built
//! once, outside the timed region; graph featurisation is timed separately
//! (`prep`).
//!
//! ```sh
//! scripts/with-libtorch.sh cargo bench --bench step                      # timings, 1 and 2 threads
//! scripts/with-libtorch.sh cargo bench --bench step -- --check-only      # fixtures only
//! scripts/with-libtorch.sh cargo bench --bench step -- --verify-example  # the timed step = what Trainer::run logs
//! ```
//!
//! Writes `<out>/step-fixture-b<B>-<dtype>.safetensors` (initial weights,
//! batches, drawn steps and noise, per-term loss values, gradients of the
//! total) and `<out>/step-rust.json` (timings); `scripts/bench_pytorch.py`
//! reads both.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Parser;
use physcon::data::{Dataset, LabelledBatch};
use physcon::{Error, Result};
use tch::{Kind, Tensor};
use two_stage::data::{StepBatches, TrainData};
use two_stage::log::Log;
use two_stage::model::Graph;
use two_stage::objective::{Arm, Teacher};
use two_stage::optim::zero_grads;
use two_stage::settings::{OptimalityForm, Preset, Settings};
use two_stage::training::{seed_step, Trainer};

#[derive(Parser, Debug)]
#[command(about = "Stage-2 consistency step of the reference model: timings and PyTorch fixtures")]
struct Args {
    /// Thread counts (tch::set_num_threads), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<i32>,
    /// Batch sizes (molecules per batch; the step uses one batch of each frame kind).
    #[arg(long, value_delimiter = ',', default_value = "32,256")]
    batches: Vec<usize>,
    /// Output folder for fixtures and results.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Timed repetitions at least (after 2 warm-up calls).
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Timed seconds at least per measurement (more repetitions while under it, at most 200).
    #[arg(long, default_value_t = 3.0)]
    min_seconds: f64,
    /// Only write the equality-check fixtures, time nothing.
    #[arg(long)]
    check_only: bool,
    /// Skip the per-loss breakdown.
    #[arg(long)]
    no_breakdown: bool,
    /// Do not (re)write the equality-check fixtures.
    #[arg(long)]
    no_fixtures: bool,
    /// Where to write the timings (default `<out>/step-rust.json`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Check that this bench's step computes what the example's `Trainer` logs, then exit.
    #[arg(long)]
    verify_example: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const SEED: u64 = 0;
/// SGD learning rate of the timed step (tiny: the weights stay where they are).
const LR: f64 = 1e-6;

/// A fresh trainer as the example makes it (seeded init, fitted atomic
/// references), at the first stage-2 step.
fn trainer(data: &TrainData, batch_size: usize) -> Result<Trainer> {
    let mut settings = Settings::preset(Preset::Cpu)?;
    settings.plan.batch_size = batch_size;
    // scripts/bench_pytorch.py replays the stationarity form, not the preset's default.
    settings.optimality = OptimalityForm::Stationarity;
    let stage2 = settings.plan.stage1_steps;
    let mut t = Trainer::new(settings, SEED, data)?;
    t.skip_to(stage2);
    Ok(t)
}

/// The off-equilibrium batch, which every stage-2 step of the example uses.
fn offeq(p: &StepBatches) -> Result<(&LabelledBatch, &Graph)> {
    p.offeq
        .as_ref()
        .map(|(b, g)| (b, g))
        .ok_or(Error::InvalidArgument {
            arg: "data",
            reason: "the stage-2 step needs the off-equilibrium frames".into(),
        })
}

fn sgd(params: &[Tensor], lr: f64) {
    tch::no_grad(|| {
        for p in params {
            let g = p.grad();
            if g.defined() {
                let _ = p.shallow_clone().f_sub_(&(g * lr));
            }
        }
    });
}

fn kind_name(kind: Kind) -> &'static str {
    if kind == Kind::Double {
        "f64"
    } else {
        "f32"
    }
}

/// Writes the equality-check fixture of one batch size and dtype.
fn write_fixture(data: &TrainData, batch_size: usize, kind: Kind, out: &Path) -> Result<PathBuf> {
    let mut t = trainer(data, batch_size)?;
    // Casts the model's variables in place (the model's tensors are the store's).
    t.vs_mut().set_kind(kind);
    let (vs, schedule, settings, step) = (t.vs(), t.schedule(), t.settings(), t.step());
    let weights = t.weights(Arm::Consistency)?;
    let p = t.batches(&weights, data, kind)?;
    let (o, g2) = offeq(&p)?;
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (format!("model.{k}"), v.detach().copy()))
        .collect();
    for (prefix, b) in [("s", &p.structures), ("o", o)] {
        let mb = &b.batch;
        named.push((format!("{prefix}.pos"), mb.pos().copy()));
        named.push((format!("{prefix}.species"), mb.species().copy()));
        named.push((format!("{prefix}.batch"), mb.layout().batch().copy()));
        if let Some(bonds) = mb.bonds() {
            named.push((format!("{prefix}.bond_index"), bonds.index().copy()));
            named.push((format!("{prefix}.bond_order"), bonds.order().copy()));
        }
        named.push((format!("{prefix}.energy"), b.energy.copy()));
        named.push((
            format!("{prefix}.energy_mask"),
            b.energy_mask.to_kind(Kind::Int64),
        ));
        named.push((format!("{prefix}.forces"), b.forces.copy()));
        named.push((format!("{prefix}.force_mask"), b.force_mask.to_kind(Kind::Int64)));
    }
    seed_step(SEED, Arm::Consistency, step);
    let (terms, draws) = t.objective().losses(&weights, Teacher::Model, &p)?;
    for (suffix, drawn) in [
        ("den", &draws.denoising),
        ("opt", &draws.optimality),
        ("score", &draws.score),
    ] {
        let drawn = drawn.as_ref().ok_or(Error::InvalidArgument {
            arg: "step",
            reason: format!("the consistency step drew nothing for `{suffix}`"),
        })?;
        named.push((format!("draw.t_{suffix}"), drawn.t.copy()));
        named.push((format!("draw.eps_{suffix}"), drawn.eps.detach().copy()));
    }
    let total = terms.total()?;
    total.backward();
    for term in terms.breakdown() {
        named.push((format!("loss.{}", term.name), Tensor::from_slice(&[term.value])));
        named.push((
            format!("weight.{}", term.name),
            Tensor::from_slice(&[term.weight]),
        ));
    }
    named.push((
        "loss.total".into(),
        Tensor::from_slice(&[total.double_value(&[])]),
    ));
    for (name, var) in trainable_named(vs) {
        let g = var.grad();
        if g.defined() {
            named.push((format!("grad.{name}"), g.copy()));
        }
    }
    let c = settings.model;
    named.push((
        "meta.ints".into(),
        Tensor::from_slice(&[c.hidden, c.layers, c.rbf, settings.diffusion_steps]),
    ));
    named.push((
        "meta.floats".into(),
        Tensor::from_slice(&[c.rbf_max, settings.kt, LR, settings.small_t_fraction]),
    ));
    named.push((
        "meta.ranges".into(),
        Tensor::from_slice(&[
            *settings.small_t.start(),
            *settings.small_t.end(),
            *settings.optimality_t.start(),
            *settings.optimality_t.end(),
            *settings.score_t.start(),
            *settings.score_t.end(),
        ]),
    ));
    let abar: Vec<f64> = (0..=settings.diffusion_steps)
        .map(|t| schedule.alpha_bar(t))
        .collect::<Result<_>>()?;
    named.push(("meta.alpha_bar".into(), Tensor::from_slice(&abar)));
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let path = out.join(format!(
        "step-fixture-b{batch_size}-{}.safetensors",
        kind_name(kind)
    ));
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&refs, &path)?;
    println!(
        "fixture {} ({} atoms + {} atoms): {}",
        path.display(),
        p.g.layout.num_atoms(),
        g2.layout.num_atoms(),
        terms
    );
    Ok(path)
}

/// The trainable variables with their names, sorted by name.
fn trainable_named(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Runs the example's own `Trainer::run` for the first stage-2 step and
/// compares its logged loss terms with this bench's step on the same seed.
fn verify_example(data: &TrainData, out: &Path) -> Result<()> {
    let dir = out.join("verify-example");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let mut t = trainer(data, 32)?;
    let step = t.step();
    let mut log = Log::open(&dir.join("metrics.csv"))?;
    t.run(
        Arm::Consistency,
        step + 1,
        data,
        &mut log,
        &dir.join("c.safetensors"),
    )?;
    drop(log);
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).map_err(|source| Error::Io {
        path: dir.join("metrics.csv"),
        source,
    })?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();

    let fresh = trainer(data, 32)?;
    let weights = fresh.weights(Arm::Consistency)?;
    let p = fresh.batches(&weights, data, Kind::Float)?;
    seed_step(SEED, Arm::Consistency, step);
    let (terms, _) = fresh.objective().losses(&weights, Teacher::Model, &p)?;
    let mut worst = 0f64;
    for term in terms.breakdown() {
        let col = header.iter().position(|h| *h == term.name);
        let logged: f64 = col
            .and_then(|c| row.get(c))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        let rel = (term.value - logged).abs() / logged.abs().max(1e-30);
        worst = worst.max(if rel.is_nan() { f64::INFINITY } else { rel });
        println!(
            "  {:<11} example {:>14.6e}  bench {:>14.6e}  rel {:.1e}",
            term.name, logged, term.value, rel
        );
    }
    // The log holds 7 significant digits.
    if worst < 2e-6 {
        println!("verify-example: OK (the bench's step computes the example's stage-2 losses; worst rel {worst:.1e})");
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            arg: "verify-example",
            reason: format!("the bench's step differs from the example's (worst rel {worst:.1e})"),
        })
    }
}

struct Measured {
    threads: i32,
    batch: usize,
    atoms: i64,
    atoms2: i64,
    prep: common::Timing,
    step: common::Timing,
    parts: Vec<(&'static str, common::Timing)>,
}

fn measure(data: &TrainData, batch_size: usize, threads: i32, args: &Args) -> Result<Measured> {
    tch::set_num_threads(threads);
    let t = trainer(data, batch_size)?;
    let weights = t.weights(Arm::Consistency)?;
    let params = t.vs().trainable_variables();
    let objective = t.objective();
    let time = |f: &mut dyn FnMut() -> Result<()>| common::time_reps(f, 2, args.reps, args.min_seconds, 200);
    let prep = time(&mut || Ok(t.batches(&weights, data, Kind::Float).map(|_| ())?))?;
    let p = t.batches(&weights, data, Kind::Float)?;
    let (o, g2) = offeq(&p)?;
    tch::manual_seed(0);
    let step_timing = time(&mut || {
        let (terms, _) = objective.losses(&weights, Teacher::Model, &p)?;
        let total = terms.total()?;
        zero_grads(&params);
        total.backward();
        sgd(&params, LR);
        Ok(())
    })?;
    let mut parts = Vec::new();
    if !args.no_breakdown {
        let backward = |loss: Tensor| {
            zero_grads(&params);
            loss.backward();
        };
        let (s, g) = (&p.structures, &p.g);
        let w = weights;
        let energy_force = |b, g| -> Result<()> {
            let (e, f) = objective.energy_force(b, g, true)?;
            let f = f.unwrap_or_else(|| e.zeros_like());
            backward(e * w.energy + f * w.force);
            Ok(())
        };
        parts.push(("energy+force mmff", time(&mut || energy_force(s, g))?));
        parts.push(("energy+force perturbed", time(&mut || energy_force(o, g2))?));
        parts.push((
            "denoising",
            time(&mut || {
                backward(objective.denoising(s, g)?.0);
                Ok(())
            })?,
        ));
        parts.push((
            "optimality",
            time(&mut || {
                backward(objective.optimality(s, g)?.0);
                Ok(())
            })?,
        ));
        parts.push((
            "score",
            time(&mut || {
                backward(objective.score(o, g2, Teacher::Model)?.0);
                Ok(())
            })?,
        ));
    }
    Ok(Measured {
        threads,
        batch: batch_size,
        atoms: p.g.layout.num_atoms(),
        atoms2: g2.layout.num_atoms(),
        prep,
        step: step_timing,
        parts,
    })
}

fn json(results: &[Measured], args: &Args) -> String {
    let mut s = String::from("{\n  \"impl\": \"physcon\",\n");
    let _ = writeln!(
        s,
        "  \"reps_min\": {}, \"min_seconds\": {},",
        args.reps, args.min_seconds
    );
    s.push_str("  \"runs\": [\n");
    for (k, m) in results.iter().enumerate() {
        let parts: Vec<String> = m
            .parts
            .iter()
            .map(|(n, t)| format!("\"{n}\": {:.4}", t.median * 1e3))
            .collect();
        let _ = write!(
            s,
            "    {{\"threads\": {}, \"batch\": {}, \"atoms\": [{}, {}], \"step_ms\": {:.4}, \"step_min_ms\": {:.4}, \
             \"reps\": {}, \"mol_per_s\": {:.2}, \"prep_ms\": {:.4}, \"parts_ms\": {{{}}}}}",
            m.threads,
            m.batch,
            m.atoms,
            m.atoms2,
            m.step.median * 1e3,
            m.step.min * 1e3,
            m.step.reps,
            m.batch as f64 / m.step.median,
            m.prep.median * 1e3,
            parts.join(", ")
        );
        s.push_str(if k + 1 < results.len() { ",\n" } else { "\n" });
    }
    s.push_str("  ]\n}\n");
    s
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = common::repo_root();
    let out = common::output_dir(&args.out)?;
    let train = Dataset::read(root.join("data/train.extxyz.gz"))?;
    let data = TrainData::new(&train)?;
    if args.verify_example {
        tch::set_num_threads(1);
        return verify_example(&data, &out);
    }
    tch::set_num_threads(1);
    if !args.no_fixtures {
        for &b in &args.batches {
            write_fixture(&data, b, Kind::Float, &out)?;
        }
        write_fixture(&data, args.batches[0], Kind::Double, &out)?;
    }
    if args.check_only {
        return Ok(());
    }
    println!(
        "stage-2 consistency step, reference model (f32, hidden 64, 3 layers, rbf 16), CPU, {} interop thread(s)",
        tch::get_num_interop_threads()
    );
    println!(
        "{:>5} {:>7} {:>11} {:>11} {:>10} {:>9} {:>9}",
        "batch", "threads", "atoms", "step (ms)", "mol/s", "prep (ms)", "reps"
    );
    let mut results = Vec::new();
    for &b in &args.batches {
        for &threads in &args.threads {
            let m = measure(&data, b, threads, &args)?;
            println!(
                "{:>5} {:>7} {:>5}+{:<5} {:>11.2} {:>10.1} {:>9.2} {:>9}",
                m.batch,
                m.threads,
                m.atoms,
                m.atoms2,
                m.step.median * 1e3,
                m.batch as f64 / m.step.median,
                m.prep.median * 1e3,
                m.step.reps
            );
            for (name, t) in &m.parts {
                println!("{:>26} {:>11.2} ms  ({} reps)", name, t.median * 1e3, t.reps);
            }
            results.push(m);
        }
    }
    let path = args.json.clone().unwrap_or_else(|| out.join("step-rust.json"));
    std::fs::write(&path, json(&results, &args)).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    println!("wrote {}", path.display());
    Ok(())
}
