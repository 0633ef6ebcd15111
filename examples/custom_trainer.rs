//! Calling physcon's losses from your own trainer: a stage-2 step with a tiny
//! tch model whose energy and eps heads share an encoder.
//!
//! `scripts/with-libtorch.sh cargo run --example custom_trainer`

use physcon::diffusion::{q_sample, x0_from_eps, NoiseSchedule};
use physcon::losses::{
    DenoisingLoss, EnergyLoss, EnergyMetric, ForceLoss, Forces, GradientFlow, LossTerms, ScoreConsistency,
    StationarityLoss,
};
use physcon::tch::nn::{self, Module, OptimizerConfig};
use physcon::tch::{Device, Kind, Tensor};
use physcon::{energy_and_forces, BatchLayout, Result, Temperature};

/// Your model: a shared encoder of squared distances to the molecule's centroid,
/// an energy head (sum over atoms) and an equivariant eps head.
struct Toy {
    encoder: nn::Linear,
    energy: nn::Linear,
    eps: nn::Linear,
}

impl Toy {
    fn features(&self, layout: &BatchLayout, pos: &Tensor) -> Result<Tensor> {
        let centred = layout.centre(pos)?;
        let r2 = centred.square().sum_dim_intlist(1, true, Kind::Float);
        Ok(self.encoder.forward(&r2).silu())
    }
    fn energy(&self, layout: &BatchLayout, pos: &Tensor) -> Result<Tensor> {
        layout.sum(&self.energy.forward(&self.features(layout, pos)?).squeeze_dim(1))
    }
    fn eps(&self, layout: &BatchLayout, x_t: &Tensor) -> Result<Tensor> {
        // A scalar per atom times the centred position: rotation equivariant, centroid free.
        let centred = layout.centre(x_t)?;
        layout.centre(&(centred * self.eps.forward(&self.features(layout, x_t)?)))
    }
}

fn main() -> Result<()> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let model = Toy {
        encoder: nn::linear(&p / "encoder", 1, 16, Default::default()),
        energy: nn::linear(&p / "energy", 16, 1, Default::default()),
        eps: nn::linear(&p / "eps", 16, 1, Default::default()),
    };
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;

    // A batch: 2 molecules of 3 and 4 atoms, cheap structures with accurate labels.
    let layout = BatchLayout::from_counts(&[3, 4], Device::Cpu)?;
    let pos = Tensor::randn([7, 3], (Kind::Float, Device::Cpu));
    let energy_labels = Tensor::from_slice(&[-1.0f32, -1.5]);
    let force_labels = Tensor::randn([7, 3], (Kind::Float, Device::Cpu)) * 0.1;
    let schedule = NoiseSchedule::cosine(1000)?;
    // The losses, built once: settings are validated here, not per step.
    let energy_loss = EnergyLoss::new(EnergyMetric::Mse)?.per_atom(true);
    let force_loss = ForceLoss::new();
    let denoising = DenoisingLoss::new();
    // ToStructure (the default): the energy head is a frozen teacher here,
    // even though it shares the encoder with the eps head.
    let optimality = StationarityLoss::new().flow(GradientFlow::ToStructure);
    let score = ScoreConsistency::new(Temperature::kelvin(450.0)?.kt())?;

    for step in 0..3 {
        // The energy as physcon sees it: any closure over positions.
        let energy = |r: &Tensor| model.energy(&layout, r);
        // One forward for the energy and (with their graph) the forces.
        let labelled = energy_and_forces(&energy, &pos, &layout, true)?;

        let t = schedule.sample_t(2, 1..=1000, Device::Cpu)?;
        let noised = q_sample(&schedule, &pos, &t, &layout)?;
        let eps_hat = model.eps(&layout, noised.x_t())?;

        // A generated structure: one denoising step from a small noise level.
        let t_small = schedule.sample_t(2, 1..=100, Device::Cpu)?;
        let small = q_sample(&schedule, &pos, &t_small, &layout)?;
        let generated = x0_from_eps(
            small.x_t(),
            &model.eps(&layout, small.x_t())?,
            small.level(),
            &layout,
        )?;

        let score_t = schedule.sample_t(2, 1..=20, Device::Cpu)?;
        let near = q_sample(&schedule, &pos, &score_t, &layout)?;
        let near_eps = model.eps(&layout, near.x_t())?;

        let mut terms = LossTerms::new();
        let e = &labelled.energy;
        terms.push(
            "energy",
            1.0,
            energy_loss.forward(e, &energy_labels, None, &layout)?,
        )?;
        let f = &labelled.forces;
        terms.push("force", 1.0, force_loss.forward(f, &force_labels, None, &layout)?)?;
        terms.push(
            "denoising",
            0.01,
            denoising.forward(&eps_hat, noised.eps(), &layout)?,
        )?;
        terms.push(
            "optimality",
            0.1,
            optimality.forward(&energy, &generated, &layout)?,
        )?;
        let forces = Forces::Model {
            energy: &energy,
            at: near.x0(),
        };
        terms.push(
            "score",
            1.0,
            score.forward(&near_eps, near.level(), forces, &layout)?,
        )?;

        opt.zero_grad();
        terms.total()?.backward();
        opt.step();
        println!("step {step}: {terms}");
    }
    Ok(())
}
