//! Calling physcon's losses from your own trainer: a stage-2 step with a tiny
//! tch model whose energy and eps heads share an encoder.
//!
//! `scripts/with-libtorch.sh cargo run --example custom_trainer`

use physcon::diffusion::{q_sample, x0_from_eps, NoiseSchedule};
use physcon::losses::{
    denoising_loss, force_loss, EnergyLoss, Forces, GradientFlow, LossTerms, OptimalityLoss, ScoreConsistency,
};
use physcon::{BatchLayout, Result, Temperature};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

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
    let kt = Temperature::kelvin(450.0)?.kt();

    for step in 0..3 {
        let x = pos.detach().set_requires_grad(true);
        let e = model.energy(&layout, &x)?;
        let f = physcon::forces(&|r: &Tensor| model.energy(&layout, r), &x, &layout, true)?;

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

        // The energy as physcon sees it: any closure over positions.
        let energy = |r: &Tensor| model.energy(&layout, r);
        let score_t = schedule.sample_t(2, 1..=20, Device::Cpu)?;
        let near = q_sample(&schedule, &pos, &score_t, &layout)?;
        let near_eps = model.eps(&layout, near.x_t())?;

        let mut terms = LossTerms::new();
        terms.push(
            "energy",
            1.0,
            EnergyLoss::default()
                .per_atom(true)
                .forward(&e, &energy_labels, &layout, None)?,
        )?;
        terms.push("force", 1.0, force_loss(&f, &force_labels, &layout, None)?)?;
        terms.push(
            "denoising",
            0.01,
            denoising_loss(&eps_hat, noised.eps(), &layout)?,
        )?;
        // ToStructure (the default): the energy head is a frozen teacher here,
        // even though it shares the encoder with the eps head.
        let optimality = OptimalityLoss::stationarity().flow(GradientFlow::ToStructure);
        terms.push(
            "optimality",
            0.1,
            optimality.forward(&energy, &generated, None, &layout)?,
        )?;
        let score = ScoreConsistency::new(kt)?;
        terms.push(
            "score",
            1.0,
            score.forward(&near_eps, &near, Forces::Model(&energy), &layout)?,
        )?;

        opt.zero_grad();
        terms.total()?.backward();
        opt.step();
        println!("step {step}: {terms}");
    }
    Ok(())
}
