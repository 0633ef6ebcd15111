//! Variance-preserving diffusion over coordinates.
//!
//! Forward process `R_t = a_t R_0 + s_t eps` with `eps ~ N(0, I)` projected
//! per molecule to zero centroid: coordinates live in the centre-of-mass-free
//! subspace and `R_0` is centred. Conversions between noise, score and clean
//! structure, and DDPM/DDIM samplers that keep the autograd graph for only
//! the last k steps.

mod sampler;
mod schedule;

use tch::{Kind, Tensor};

pub use sampler::{sample, Denoiser, Sampler, SamplerConfig};
pub use schedule::{NoiseLevel, NoiseSchedule, ScheduleKind};

use crate::batch::BatchLayout;
use crate::check;
use crate::error::Result;

/// Standard normal noise `[N, 3]` of `kind`, projected per molecule to zero centroid.
///
/// Drawn from libtorch's global generator (`tch::manual_seed`). Within the
/// subspace the noise is isotropic; each component has variance `1 - 1/n_b`.
///
/// # Errors
/// [`crate::Error::Dtype`] unless `kind` is a float kind.
pub fn com_free_noise(layout: &BatchLayout, kind: Kind) -> Result<Tensor> {
    check::float_kind("kind", kind)?;
    let eps = Tensor::f_randn([layout.num_atoms(), 3], (kind, layout.device()))?;
    layout.centre_unchecked(&eps)
}

/// A noised structure and what made it.
#[derive(Debug)]
pub struct Noised {
    x0: Tensor,
    x_t: Tensor,
    eps: Tensor,
    level: NoiseLevel,
}

impl Noised {
    /// The clean structure, centred per molecule, `[N, 3]`.
    pub fn x0(&self) -> &Tensor {
        &self.x0
    }

    /// The noised structure `R_t = a_t R_0 + s_t eps`, `[N, 3]`.
    pub fn x_t(&self) -> &Tensor {
        &self.x_t
    }

    /// The centre-of-mass-free noise `eps`, `[N, 3]`: the denoising target.
    pub fn eps(&self) -> &Tensor {
        &self.eps
    }

    /// The noise level (`t`, `a_t`, `s_t` per molecule).
    pub fn level(&self) -> &NoiseLevel {
        &self.level
    }
}

/// Noises a clean structure at steps `t: [B]`: `R_t = a_t centre(R_0) + s_t eps`.
///
/// `eps` is drawn with [`com_free_noise`]. The result keeps the graph to `x0`.
///
/// # Errors
/// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`],
/// [`crate::Error::NonFinite`] for `x0`; those of [`NoiseSchedule::level`] for `t`,
/// and [`crate::Error::Shape`] unless `t` has one entry per molecule.
pub fn q_sample(schedule: &NoiseSchedule, x0: &Tensor, t: &Tensor, layout: &BatchLayout) -> Result<Noised> {
    check::atoms3("x0", x0, layout)?;
    let eps = com_free_noise(layout, x0.kind())?;
    noise_unchecked(schedule, x0, t, eps, layout)
}

/// As [`q_sample`] with given noise `eps: [N, 3]` (projected to zero centroid per molecule).
///
/// # Errors
/// As [`q_sample`], and the same checks for `eps`.
pub fn q_sample_with(
    schedule: &NoiseSchedule,
    x0: &Tensor,
    t: &Tensor,
    eps: &Tensor,
    layout: &BatchLayout,
) -> Result<Noised> {
    check::atoms3("x0", x0, layout)?;
    check::atoms3("eps", eps, layout)?;
    check::same_kind("eps", eps, x0.kind())?;
    let eps = layout.centre_unchecked(eps)?;
    noise_unchecked(schedule, x0, t, eps, layout)
}

fn noise_unchecked(
    schedule: &NoiseSchedule,
    x0: &Tensor,
    t: &Tensor,
    eps: Tensor,
    layout: &BatchLayout,
) -> Result<Noised> {
    check::device("t", t, layout)?;
    let level = schedule.level(t, x0.kind())?;
    check::shape("t", t, &[layout.num_molecules()], "[B]")?;
    let x0 = layout.centre_unchecked(x0)?;
    let x_t = x0
        .f_mul(&level.alpha_atoms(layout)?)?
        .f_add(&eps.f_mul(&level.sigma_atoms(layout)?)?)?;
    Ok(Noised { x0, x_t, eps, level })
}

fn check_pair(
    a: (&'static str, &Tensor),
    b: (&'static str, &Tensor),
    level: &NoiseLevel,
    layout: &BatchLayout,
) -> Result<()> {
    check::atoms3(a.0, a.1, layout)?;
    check::atoms3(b.0, b.1, layout)?;
    check::same_kind(b.0, b.1, a.1.kind())?;
    level.check(layout, a.1.kind())
}

/// The score `grad log p_t(R_t) = -eps / s_t` (1/Å) from a noise prediction.
///
/// # Errors
/// Shape, dtype, device or finiteness of `eps`; a `level` that does not fit the layout.
pub fn eps_to_score(eps: &Tensor, level: &NoiseLevel, layout: &BatchLayout) -> Result<Tensor> {
    check::atoms3("eps", eps, layout)?;
    level.check(layout, eps.kind())?;
    Ok(eps.f_div(&level.sigma_atoms(layout)?)?.f_neg()?)
}

/// The noise `eps = -s_t score` from a score (1/Å).
///
/// # Errors
/// As [`eps_to_score`].
pub fn score_to_eps(score: &Tensor, level: &NoiseLevel, layout: &BatchLayout) -> Result<Tensor> {
    check::atoms3("score", score, layout)?;
    level.check(layout, score.kind())?;
    Ok(score.f_mul(&level.sigma_atoms(layout)?)?.f_neg()?)
}

/// The clean-structure estimate `x0_hat = (R_t - s_t eps_hat) / a_t` (Å).
///
/// # Errors
/// As [`eps_to_score`], for both tensors.
pub fn x0_from_eps(x_t: &Tensor, eps: &Tensor, level: &NoiseLevel, layout: &BatchLayout) -> Result<Tensor> {
    check_pair(("x_t", x_t), ("eps", eps), level, layout)?;
    x0_unchecked(x_t, eps, level, layout)
}

pub(crate) fn x0_unchecked(
    x_t: &Tensor,
    eps: &Tensor,
    level: &NoiseLevel,
    layout: &BatchLayout,
) -> Result<Tensor> {
    let noise = eps.f_mul(&level.sigma_atoms(layout)?)?;
    Ok(x_t.f_sub(&noise)?.f_div(&level.alpha_atoms(layout)?)?)
}

/// The noise implied by a clean-structure estimate: `eps = (R_t - a_t x0) / s_t`.
///
/// # Errors
/// As [`x0_from_eps`].
pub fn eps_from_x0(x_t: &Tensor, x0: &Tensor, level: &NoiseLevel, layout: &BatchLayout) -> Result<Tensor> {
    check_pair(("x_t", x_t), ("x0", x0), level, layout)?;
    let signal = x0.f_mul(&level.alpha_atoms(layout)?)?;
    Ok(x_t.f_sub(&signal)?.f_div(&level.sigma_atoms(layout)?)?)
}
