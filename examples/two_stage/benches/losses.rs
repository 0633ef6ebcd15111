//! Forward + backward of every loss, the samplers and batched Kabsch RMSD at
//! batch 32 and 256 of 20-atom molecules, with an analytic (Morse pair)
//! energy (group `losses`), and every loss again with the two-stage example's
//! reference model as the energy and the denoiser (group `losses-model`);
//! throughput in molecules per second. Single-threaded (recorded in the group
//! names) so figures compare across machines.
//!
//! `scripts/with-libtorch.sh cargo bench --bench losses`
//! (`-- losses-model` for the model group alone).

mod common;

use criterion::measurement::Measurement;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use physcon::diffusion::{com_free_noise, q_sample, sample, NoiseSchedule, SamplerConfig};
use physcon::losses::{
    DenoisingLoss, EnergyDescentLoss, EnergyLoss, EnergyMetric, ForceLoss, Forces, ScoreConsistency,
    StationarityLoss,
};
use physcon::metrics::kabsch_rmsd;
use physcon::{BatchLayout, EnergyModel, MolBatch};
use tch::{Device, Kind, Tensor};
use two_stage::model::{Graph, Model, ModelConfig};

/// The losses that need only an energy: energy, force, both optimality forms.
///
/// The energy term backpropagates into the model's parameters, as in training;
/// an energy without parameters (`trainable = false`) differentiates the
/// positions instead, so that there is a backward to time.
fn energy_losses<M: Measurement>(
    group: &mut BenchmarkGroup<'_, M>,
    energy: &dyn EnergyModel,
    trainable: bool,
    layout: &BatchLayout,
    pos: &Tensor,
) {
    let molecules = layout.num_molecules();
    let leaf = || pos.detach().set_requires_grad(true);
    let target = Tensor::randn([molecules], (Kind::Float, Device::Cpu));
    group.bench_function(BenchmarkId::new("energy", molecules), |b| {
        b.iter(|| {
            let x = if trainable { pos.shallow_clone() } else { leaf() };
            let e = energy.energy(&x).unwrap();
            EnergyLoss::new(EnergyMetric::Mse)
                .unwrap()
                .per_atom(true)
                .forward(&e, &target, None, layout)
                .unwrap()
                .backward();
        })
    });
    let f_ref = Tensor::randn_like(pos);
    group.bench_function(BenchmarkId::new("force", molecules), |b| {
        b.iter(|| {
            let f = physcon::forces(energy, &leaf(), layout, true).unwrap();
            ForceLoss::new()
                .forward(&f, &f_ref, None, layout)
                .unwrap()
                .backward();
        })
    });
    // The structure stands in for a generated one: its gradient is what would
    // flow on into the structure model.
    group.bench_function(BenchmarkId::new("optimality-stationarity", molecules), |b| {
        b.iter(|| {
            StationarityLoss::new()
                .forward(energy, &leaf(), layout)
                .unwrap()
                .backward();
        })
    });
    group.bench_function(BenchmarkId::new("optimality-descent", molecules), |b| {
        b.iter(|| {
            EnergyDescentLoss::new()
                .forward(energy, &leaf(), pos, layout)
                .unwrap()
                .backward();
        })
    });
}

fn losses(c: &mut Criterion) {
    tch::set_num_threads(1);
    let mut group = c.benchmark_group("losses/cpu-1thread");
    group.sample_size(20);
    for molecules in [32i64, 256] {
        let (layout, pos) = common::batch(molecules, common::ATOMS, 0).unwrap();
        let energy = common::energy(&layout).unwrap();
        let leaf = || pos.detach().set_requires_grad(true);
        group.throughput(Throughput::Elements(molecules as u64));
        energy_losses(&mut group, &energy, false, &layout, &pos);
        let f_ref = Tensor::randn_like(&pos);
        group.bench_function(BenchmarkId::new("denoising", molecules), |b| {
            b.iter(|| {
                let x = leaf();
                DenoisingLoss::new()
                    .forward(&(&x * 0.5), &f_ref, &layout)
                    .unwrap()
                    .backward();
            })
        });
        let schedule = NoiseSchedule::cosine(1000).unwrap();
        let t = Tensor::full([molecules], 10, (Kind::Int64, Device::Cpu));
        let noised = q_sample(&schedule, &pos, &t, &layout).unwrap();
        let score = ScoreConsistency::new(0.0388).unwrap();
        group.bench_function(BenchmarkId::new("score", molecules), |b| {
            b.iter(|| {
                let eps_hat = leaf() * 0.1;
                let forces = Forces::Model {
                    energy: &energy,
                    at: noised.x0(),
                };
                let loss = score.forward(&eps_hat, noised.level(), forces, &layout);
                loss.unwrap().backward();
            })
        });
        let rotated = pos
            .matmul(&Tensor::from_slice(&[0.0f32, -1., 0., 1., 0., 0., 0., 0., 1.]).reshape([3, 3]))
            + 0.01;
        group.bench_function(BenchmarkId::new("kabsch-rmsd", molecules), |b| {
            b.iter(|| {
                let x = leaf();
                kabsch_rmsd(&x, &rotated, &layout)
                    .unwrap()
                    .sum(Kind::Float)
                    .backward();
            })
        });
        let w = Tensor::from(0.3f32).set_requires_grad(true);
        let denoiser = |x: &Tensor, _t: &Tensor| -> physcon::Result<Tensor> { Ok(x.tanh() * &w) };
        for (name, config) in [
            ("ddim-50-keep1", SamplerConfig::ddim(50).keep_graph_last(1)),
            ("ddpm-50-keep1", SamplerConfig::ddpm(50).keep_graph_last(1)),
        ] {
            group.bench_function(BenchmarkId::new(name, molecules), |b| {
                b.iter(|| {
                    let x_t = com_free_noise(&layout, Kind::Float).unwrap();
                    sample(&denoiser, &schedule, &layout, config, &x_t)
                        .unwrap()
                        .sum(Kind::Float)
                        .backward();
                })
            });
        }
    }
    group.finish();
}

/// Every loss with the reference model (f32, preset `cpu`: hidden 64, 3 layers,
/// 16 radial functions, fully connected within each molecule) as the energy
/// and, for the denoising and score terms, as the denoiser.
fn losses_model(c: &mut Criterion) {
    tch::set_num_threads(1);
    let mut group = c.benchmark_group("losses-model/cpu-1thread");
    // Calls of 40 ms to 1.5 s: flat sampling, and time enough for 10 of the slowest.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(std::time::Duration::from_secs(16));
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = Model::new(&vs.root(), ModelConfig::default(), 1000);
    let schedule = NoiseSchedule::cosine(1000).unwrap();
    for molecules in [32i64, 256] {
        let (layout, pos) = common::batch(molecules, common::ATOMS, 0).unwrap();
        let species = common::species(molecules, common::ATOMS);
        let batch = MolBatch::new(&pos, &species, layout.batch(), molecules).unwrap();
        let g = Graph::new(&batch, Kind::Float).unwrap();
        let energy = net.energy_model(&g);
        group.throughput(Throughput::Elements(molecules as u64));
        energy_losses(&mut group, &energy, true, &layout, &pos);
        group.bench_function(BenchmarkId::new("denoising", molecules), |b| {
            b.iter(|| {
                let t = schedule.sample_t(molecules, 1..=1000, Device::Cpu).unwrap();
                let noised = q_sample(&schedule, &pos, &t, &layout).unwrap();
                let eps_hat = net.eps(&g, noised.x_t(), &t).unwrap();
                DenoisingLoss::new()
                    .forward(&eps_hat, noised.eps(), &layout)
                    .unwrap()
                    .backward();
            })
        });
        let score = ScoreConsistency::new(0.0388).unwrap();
        group.bench_function(BenchmarkId::new("score", molecules), |b| {
            b.iter(|| {
                let t = schedule.sample_t(molecules, 1..=20, Device::Cpu).unwrap();
                let noised = q_sample(&schedule, &pos, &t, &layout).unwrap();
                let eps_hat = net.eps(&g, noised.x_t(), &t).unwrap();
                let forces = Forces::Model {
                    energy: &energy,
                    at: noised.x0(),
                };
                let loss = score.forward(&eps_hat, noised.level(), forces, &layout);
                loss.unwrap().backward();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, losses, losses_model);
criterion_main!(benches);
