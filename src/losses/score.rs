use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check;
use crate::diffusion::{NoiseLevel, Noised};
use crate::energy::{energy_and_grad, leaf_copy, EnergyModel};
use crate::error::{Error, Result};
use crate::losses::denoising::squared_error_per_atom_mean;
use crate::losses::GradientFlow;

/// Where score consistency takes the forces `F(R)` of the clean structure from.
#[derive(Clone, Copy)]
pub enum Forces<'a> {
    /// `F = -dE/dR` of an energy model at the clean structure: the accurate
    /// energy teaches the structure model (consistency proper).
    Model(&'a dyn EnergyModel),
    /// Force labels `[N, 3]` (eV/Å) of the clean structure: the supervised
    /// variant. Only [`GradientFlow::ToStructure`] makes sense with labels.
    Labels(&'a Tensor),
}

impl std::fmt::Debug for Forces<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Forces::Model(_) => f.write_str("Forces::Model(..)"),
            Forces::Labels(t) => f.debug_tuple("Forces::Labels").field(&t.size()).finish(),
        }
    }
}

/// The noise-space target of score consistency.
///
/// ```text
/// eps* = -(s_t / a_t) F(R) / kT
/// ```
///
/// for `R_t = a_t R + s_t eps`: under `p(R) ∝ exp(-E/kT)` the score of the
/// clean distribution is `F/kT`, the score of the noised one is its
/// conditional mean divided by `a_t`, and `eps = -s_t score`. `F` is made
/// centre-of-mass free per molecule first. Dimensionless.
///
/// # Shapes
/// `forces`: `[N, 3]` (eV/Å); `level`: `[B]` per molecule; `kt` in eV (the unit of the energies).
///
/// # Errors
/// [`Error::NonPositive`] for `kt`; [`Error::Shape`], [`Error::Dtype`],
/// [`Error::Device`], [`Error::NonFinite`] for `forces`.
pub fn score_target(forces: &Tensor, level: &NoiseLevel, kt: f64, layout: &BatchLayout) -> Result<Tensor> {
    let kt = check::positive("kt", kt)?;
    check::atoms3("forces", forces, layout)?;
    level.check(layout, forces.kind())?;
    target_unchecked(forces, level, kt, layout)
}

fn target_unchecked(forces: &Tensor, level: &NoiseLevel, kt: f64, layout: &BatchLayout) -> Result<Tensor> {
    let ratio = level.sigma().f_div(level.alpha())?.f_div_scalar(-kt)?;
    let ratio = layout.expand_unchecked(&ratio)?.f_unsqueeze(1)?;
    Ok(layout.centre_unchecked(forces)?.f_mul(&ratio)?)
}

/// Score consistency: the diffusion model's small-noise score must equal the energy model's force / kT.
///
/// ```text
/// L = mean_b (1/n_b) sum_{i in b} || eps_hat(R_t, t)_i - eps*_i ||^2,    eps* = -(s_t/a_t) F(R)/kT
/// ```
///
/// the score-space error weighted by `s_t^2`, on the scale of the denoising
/// loss. Dimensionless. `kT` is in the unit of the energies (eV;
/// [`crate::Temperature`] converts kelvin). Draw `t` from a small-noise range
/// and choose `kT` so that `s_t |F| / kT` is of order one.
///
/// The [`GradientFlow`]: `ToStructure` (default) treats `eps*` as a constant
/// (forces without graph: no energy parameter is touched); `ToEnergy` treats
/// `eps_hat` as a constant and differentiates the forces (a double backward);
/// `Both` does both.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::diffusion::{q_sample, NoiseSchedule};
/// use physcon::losses::{Forces, ScoreConsistency};
/// use physcon::{BatchLayout, Temperature};
/// use tch::{Device, Kind, Tensor};
/// let layout = BatchLayout::from_counts(&[3], Device::Cpu)?;
/// let schedule = NoiseSchedule::cosine(1000)?;
/// let clean = Tensor::randn([3, 3], (Kind::Double, Device::Cpu));
/// let noised = q_sample(&schedule, &clean, &Tensor::from_slice(&[10i64]), &layout)?;
/// let forces = Tensor::zeros([3, 3], (Kind::Double, Device::Cpu));
/// let eps_hat = Tensor::zeros([3, 3], (Kind::Double, Device::Cpu)).set_requires_grad(true);
/// let loss = ScoreConsistency::new(Temperature::kelvin(300.0)?.kt())?
///     .forward(&eps_hat, &noised, Forces::Labels(&forces), &layout)?;
/// assert_eq!(loss.double_value(&[]), 0.0); // zero force, zero noise prediction
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreConsistency {
    kt: f64,
    flow: GradientFlow,
}

impl ScoreConsistency {
    /// Score consistency at `kt` (eV), flow [`GradientFlow::ToStructure`].
    ///
    /// # Errors
    /// [`Error::NonPositive`] unless `kt` is positive and finite.
    pub fn new(kt: f64) -> Result<Self> {
        Ok(Self {
            kt: check::positive("kt", kt)?,
            flow: GradientFlow::default(),
        })
    }

    /// Sets the gradient flow.
    pub fn flow(mut self, flow: GradientFlow) -> Self {
        self.flow = flow;
        self
    }

    /// kT in eV.
    pub fn kt(&self) -> f64 {
        self.kt
    }

    /// The loss of the noise prediction `eps_hat` at `noised.x_t()`.
    ///
    /// `noised` is what [`crate::diffusion::q_sample`] returned for the clean
    /// (off-equilibrium) structure; the forces are those of its clean
    /// structure `noised.x0()`.
    ///
    /// # Shapes
    /// `eps_hat`: `[N, 3]`, the dtype of `noised`.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::Dtype`], [`Error::Device`], [`Error::NonFinite`]
    /// for `eps_hat`, the labels or the energy's output; [`Error::InvalidArgument`]
    /// for labels with [`GradientFlow::ToEnergy`] (nothing would learn);
    /// [`Error::NoGraph`] when the energy does not depend on the positions.
    pub fn forward(
        &self,
        eps_hat: &Tensor,
        noised: &Noised,
        forces: Forces<'_>,
        layout: &BatchLayout,
    ) -> Result<Tensor> {
        check::atoms3("eps_hat", eps_hat, layout)?;
        let x0 = noised.x0();
        check::atoms3("noised.x0", x0, layout)?;
        check::same_kind("eps_hat", eps_hat, x0.kind())?;
        noised.level().check(layout, x0.kind())?;
        let energy_learns = self.flow != GradientFlow::ToStructure;
        let f = match forces {
            Forces::Labels(labels) => {
                if self.flow == GradientFlow::ToEnergy {
                    return Err(Error::InvalidArgument {
                        arg: "forces",
                        reason: "force labels with GradientFlow::ToEnergy leave nothing to train; pass Forces::Model".into(),
                    });
                }
                check::atoms3("forces", labels, layout)?;
                check::same_kind("forces", labels, x0.kind())?;
                labels.detach()
            }
            Forces::Model(model) => {
                let x = if energy_learns && x0.requires_grad() {
                    x0.shallow_clone()
                } else {
                    leaf_copy(x0)
                };
                let (_, grad) = energy_and_grad(model, &x, layout, energy_learns)?;
                grad.f_neg()?
            }
        };
        let target = target_unchecked(&f, noised.level(), self.kt, layout)?;
        let (eps_hat, target) = match self.flow {
            GradientFlow::ToStructure => (eps_hat.shallow_clone(), target.detach()),
            GradientFlow::ToEnergy => (eps_hat.detach(), target),
            GradientFlow::Both => (eps_hat.shallow_clone(), target),
        };
        let loss = squared_error_per_atom_mean(&eps_hat, &target, layout)?;
        check::finite("score loss (the energy's forces)", &loss)?;
        Ok(loss)
    }
}
