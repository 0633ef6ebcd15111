use tch::{Kind, Tensor};

use crate::batch::BatchLayout;
use crate::check;
use crate::diffusion::{com_free_noise, NoiseSchedule};
use crate::error::{Error, Result};

/// A noise-prediction (eps) model over a fixed batch of molecules.
///
/// `predict_eps(x_t, t)` returns `[N, 3]` for positions `[N, 3]` (Å) at steps
/// `t: [B]` (i64). It should be centre-of-mass free per molecule. Closures qualify.
pub trait Denoiser {
    /// The predicted noise `[N, 3]` at `x_t` and steps `t`.
    ///
    /// # Errors
    /// Whatever the model reports.
    fn predict_eps(&self, x_t: &Tensor, t: &Tensor) -> Result<Tensor>;
}

impl<F> Denoiser for F
where
    F: Fn(&Tensor, &Tensor) -> Result<Tensor> + ?Sized,
{
    fn predict_eps(&self, x_t: &Tensor, t: &Tensor) -> Result<Tensor> {
        self(x_t, t)
    }
}

/// The reverse-process update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling from the posterior `q(R_prev | R_t, x0_hat)` (Ho et al. 2020),
    /// respaced when fewer steps than T are taken.
    Ddpm,
    /// DDIM (Song et al. 2021): `eta = 0` is deterministic, `eta = 1` is DDPM.
    Ddim {
        /// Stochasticity in `[0, 1]` (larger values are accepted and add more noise).
        eta: f64,
    },
}

/// How to run a sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// The update rule.
    pub sampler: Sampler,
    /// Number of reverse steps, evenly spaced over `start..=1` (at most `start`, which defaults to T).
    pub steps: i64,
    /// Steps at the end of the chain that keep the autograd graph; the earlier
    /// ones run under `no_grad`. 0: no graph at all.
    pub keep_graph_last: i64,
    /// The step the chain starts from: `None` is `T` (sampling from noise);
    /// a smaller step refines a structure noised to that level (SDEdit).
    pub start: Option<i64>,
}

impl SamplerConfig {
    /// Deterministic DDIM (`eta = 0`) with `steps` steps and no graph.
    pub fn ddim(steps: i64) -> Self {
        Self {
            sampler: Sampler::Ddim { eta: 0.0 },
            steps,
            keep_graph_last: 0,
            start: None,
        }
    }

    /// Ancestral DDPM with `steps` steps and no graph.
    pub fn ddpm(steps: i64) -> Self {
        Self {
            sampler: Sampler::Ddpm,
            steps,
            keep_graph_last: 0,
            start: None,
        }
    }

    /// Keeps the graph through the last `k` steps.
    pub fn keep_graph_last(mut self, k: i64) -> Self {
        self.keep_graph_last = k;
        self
    }

    /// Starts the chain at step `t` instead of `T`: pass `x_start` noised to
    /// that step (e.g. `q_sample(...).x_t()` of a structure to refine).
    pub fn start_at(mut self, t: i64) -> Self {
        self.start = Some(t);
        self
    }

    /// The steps visited, from the start step down, each paired with the step it moves to (0 last).
    fn timesteps(&self, schedule: &NoiseSchedule) -> Result<Vec<(i64, i64)>> {
        let big_t = self.start.unwrap_or(schedule.steps());
        if !(1..=schedule.steps()).contains(&big_t) {
            return Err(Error::InvalidArgument {
                arg: "start",
                reason: format!(
                    "must lie in 1..={} (the schedule's T), got {big_t}",
                    schedule.steps()
                ),
            });
        }
        if !(1..=big_t).contains(&self.steps) {
            return Err(Error::InvalidArgument {
                arg: "steps",
                reason: format!("must lie in 1..={big_t} (the start step), got {}", self.steps),
            });
        }
        if !(0..=self.steps).contains(&self.keep_graph_last) {
            return Err(Error::InvalidArgument {
                arg: "keep_graph_last",
                reason: format!(
                    "must lie in 0..={} (the number of steps), got {}",
                    self.steps, self.keep_graph_last
                ),
            });
        }
        if let Sampler::Ddim { eta } = self.sampler {
            if !(eta.is_finite() && eta >= 0.0) {
                return Err(Error::InvalidArgument {
                    arg: "eta",
                    reason: format!("must be finite and >= 0, got {eta}"),
                });
            }
        }
        let ts: Vec<i64> = (0..self.steps).map(|i| big_t - i * big_t / self.steps).collect();
        Ok(ts
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, ts.get(i + 1).copied().unwrap_or(0)))
            .collect())
    }
}

/// Runs the reverse process from `x_start` (`R_T`, e.g. [`com_free_noise`], or
/// a noised structure at [`SamplerConfig::start`]) to a structure `[N, 3]`.
///
/// Only the last `config.keep_graph_last` steps record autograd history, so a
/// loss on the result differentiates through those denoiser calls and no
/// further. Randomness (DDPM, DDIM with `eta > 0`) comes from libtorch's
/// global generator.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::diffusion::{com_free_noise, sample, NoiseSchedule, SamplerConfig};
/// use physcon::BatchLayout;
/// use tch::{Device, Kind, Tensor};
/// let layout = BatchLayout::from_counts(&[3, 2], Device::Cpu)?;
/// let schedule = NoiseSchedule::cosine(1000)?;
/// let zero_eps = |x: &Tensor, _t: &Tensor| -> physcon::Result<Tensor> { Ok(x.zeros_like()) };
/// let x_t = com_free_noise(&layout, Kind::Double)?;
/// let x0 = sample(&zero_eps, &schedule, &layout, SamplerConfig::ddim(50), &x_t)?;
/// assert_eq!(x0.size(), vec![5, 3]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad config; the checks of `x_start`; a
/// denoiser output that is not a finite `[N, 3]` of the same dtype.
pub fn sample<D: Denoiser + ?Sized>(
    denoiser: &D,
    schedule: &NoiseSchedule,
    layout: &BatchLayout,
    config: SamplerConfig,
    x_start: &Tensor,
) -> Result<Tensor> {
    check::atoms3("x_start", x_start, layout)?;
    let steps = config.timesteps(schedule)?;
    let first_with_graph = steps.len() - config.keep_graph_last as usize;
    let mut x = x_start.detach();
    for (i, &(t, t_prev)) in steps.iter().enumerate() {
        let step = |x: &Tensor| reverse_step(denoiser, schedule, layout, config.sampler, x, t, t_prev);
        x = if i < first_with_graph {
            tch::no_grad(|| step(&x))?
        } else {
            tch::with_grad(|| step(&x))?
        };
    }
    Ok(x)
}

fn reverse_step<D: Denoiser + ?Sized>(
    denoiser: &D,
    schedule: &NoiseSchedule,
    layout: &BatchLayout,
    sampler: Sampler,
    x: &Tensor,
    t: i64,
    t_prev: i64,
) -> Result<Tensor> {
    let kind: Kind = x.kind();
    let (ab, ab_prev) = (schedule.alpha_bar(t)?, schedule.alpha_bar(t_prev)?);
    let t_batch = Tensor::f_full([layout.num_molecules()], t, (Kind::Int64, layout.device()))?;
    let eps = denoiser.predict_eps(x, &t_batch)?;
    check::atoms3("denoiser output", &eps, layout)?;
    check::same_kind("denoiser output", &eps, kind)?;
    let x0_hat = x
        .f_sub(&eps.f_mul_scalar((1.0 - ab).sqrt())?)?
        .f_div_scalar(ab.sqrt())?;
    let (mean, std) = match sampler {
        Sampler::Ddim { eta } => {
            let std = eta * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).sqrt();
            let dir = (1.0 - ab_prev - std * std).max(0.0).sqrt();
            (
                x0_hat
                    .f_mul_scalar(ab_prev.sqrt())?
                    .f_add(&eps.f_mul_scalar(dir)?)?,
                std,
            )
        }
        Sampler::Ddpm => {
            let beta = 1.0 - ab / ab_prev;
            let c0 = ab_prev.sqrt() * beta / (1.0 - ab);
            let ct = (ab / ab_prev).sqrt() * (1.0 - ab_prev) / (1.0 - ab);
            let var = beta * (1.0 - ab_prev) / (1.0 - ab);
            (
                x0_hat.f_mul_scalar(c0)?.f_add(&x.f_mul_scalar(ct)?)?,
                var.max(0.0).sqrt(),
            )
        }
    };
    if std > 0.0 {
        Ok(mean.f_add(&com_free_noise(layout, kind)?.f_mul_scalar(std)?)?)
    } else {
        Ok(mean)
    }
}
