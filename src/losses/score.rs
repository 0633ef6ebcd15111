use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check;
use crate::diffusion::NoiseLevel;
use crate::energy::{energy_and_grad, leaf_copy, Backward, EnergyModel};
use crate::error::{Error, Result};
use crate::losses::denoising::squared_error_per_molecule;
use crate::losses::{Checks, GradientFlow, PerMolecule};

/// Where score consistency takes the forces `F(R)` of the clean structure from.
#[derive(Clone, Copy)]
pub enum Forces<'a> {
    /// `F = -dE/dR` of an energy model at the clean structure `at` (`[N, 3]`, Å):
    /// the accurate energy teaches the structure model (consistency proper).
    Model {
        /// The energy model.
        energy: &'a dyn EnergyModel,
        /// The clean structure `R_0` that was noised.
        at: &'a Tensor,
    },
    /// Force labels `[N, 3]` (eV/Å) of the clean structure: the supervised
    /// variant. Only [`GradientFlow::ToStructure`] makes sense with labels.
    Labels(&'a Tensor),
}

impl std::fmt::Debug for Forces<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Forces::Model { at, .. } => f
                .debug_struct("Forces::Model")
                .field("at", &at.size())
                .finish_non_exhaustive(),
            Forces::Labels(t) => f.debug_tuple("Forces::Labels").field(&t.size()).finish(),
        }
    }
}

/// The noise-space target of score consistency.
///
/// ```text
/// eps* = -(s / a) F(R) / kT
/// ```
///
/// for `R_t = a R + s eps`: under `p(R) ∝ exp(-E/kT)` the score of the clean
/// distribution is `F/kT`, the score of the noised one at small noise is that
/// score divided by `a`, and `eps = -s score`. For a variance-exploding
/// noising `R_sigma = R + sigma eps` (`a = 1`) this is `eps* = -sigma F / kT`.
/// `F` is made centre-of-mass free per molecule first. Dimensionless.
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

/// The largest kT [`ScoreConsistency::new`] accepts. Above it, in any energy unit
/// molecular ML uses, no molecular simulation runs (10 eV is 116,000 K, 10 kcal/mol
/// 5,000 K, 10 kJ/mol 1,200 K): a temperature in kelvin passed as kT lands there.
pub const KT_LIMIT: f64 = 10.0;

/// Score consistency: the diffusion model's small-noise score must equal the energy model's force / kT.
///
/// ```text
/// L = mean_b (1/n_b) sum_{i in b} || eps_hat(R_t, t)_i - eps*_i ||^2,    eps* = -(s/a) F(R)/kT
/// ```
///
/// the score-space error weighted by `s^2`, on the scale of the denoising
/// loss. Dimensionless. `kT` is in the unit of the energies (eV;
/// [`crate::Temperature`] converts kelvin). Draw the noise from a small-noise
/// range and choose `kT` so that `s |F| / kT` is of order one.
///
/// Any diffusion works: pass the per-molecule [`NoiseLevel`] the noised
/// structure was made with, from physcon's [`crate::diffusion::q_sample`]
/// ([`Noised::level`](crate::diffusion::Noised::level) of its result), or from the user's own noising:
///
/// | the user's noising | level | target |
/// |---|---|---|
/// | variance preserving, `R_t = a R + s eps` (own `a`, `s`) | [`NoiseLevel::new`]`(a, s)` | `eps* = -(s/a) F/kT` |
/// | variance exploding, `R_sigma = R + sigma eps` (EDM) | [`NoiseLevel::sigma_only`]`(sigma)` | `eps* = -sigma F/kT` |
///
/// A model that predicts the clean structure `D(R_t)` (EDM's denoiser) or the
/// score instead of the noise passes `eps_hat = (R_t - a D) / s` or
/// `eps_hat = -s score` ([`crate::diffusion::eps_from_x0`], [`crate::diffusion::score_to_eps`]).
///
/// The [`GradientFlow`]: `ToStructure` (default) treats `eps*` as a constant
/// (forces without graph: no energy parameter is touched); `ToEnergy` treats
/// `eps_hat` and the clean structure as constants and differentiates the
/// forces (a double backward) into the energy model only; `Both` does both,
/// and also follows a clean structure that carries a graph.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::diffusion::NoiseLevel;
/// use physcon::losses::{Forces, ScoreConsistency};
/// use physcon::{BatchLayout, Temperature};
/// use tch::{Device, Kind, Tensor};
/// let layout = BatchLayout::from_counts(&[3], Device::Cpu)?;
/// // An EDM-style level of the user's own: R_sigma = R + sigma eps, sigma = 0.02 Å.
/// let level = NoiseLevel::sigma_only(&Tensor::from_slice(&[0.02f64]))?;
/// let forces = Tensor::zeros([3, 3], (Kind::Double, Device::Cpu));
/// let eps_hat = Tensor::zeros([3, 3], (Kind::Double, Device::Cpu)).set_requires_grad(true);
/// let loss = ScoreConsistency::new(Temperature::kelvin(300.0)?.kt())?
///     .forward(&eps_hat, &level, Forces::Labels(&forces), &layout)?;
/// assert_eq!(loss.double_value(&[]), 0.0); // zero force, zero noise prediction
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreConsistency {
    kt: f64,
    flow: GradientFlow,
    checks: Checks,
}

impl ScoreConsistency {
    /// Score consistency at `kt` (eV), flow [`GradientFlow::ToStructure`].
    ///
    /// # Errors
    /// [`Error::NonPositive`] unless `kt` is positive and finite;
    /// [`Error::InvalidArgument`] above [`KT_LIMIT`] (a temperature in kelvin
    /// passed as kT: `Temperature::kelvin(300.0)?.kt()` is the way out).
    pub fn new(kt: f64) -> Result<Self> {
        let kt = check::positive("kt", kt)?;
        if kt > KT_LIMIT {
            return Err(Error::InvalidArgument {
                arg: "kt",
                reason: format!(
                    "{kt} is kT in the unit of the energies (eV), not a temperature; no molecular simulation runs \
                     at kT > {KT_LIMIT} (116,000 K in eV). For a temperature in kelvin pass \
                     Temperature::kelvin({kt})?.kt() = {:.6} eV",
                    kt * crate::units::KB_EV_PER_K
                ),
            });
        }
        Ok(Self {
            kt,
            flow: GradientFlow::default(),
            checks: Checks::default(),
        })
    }

    setter!(flow);

    setter!(checks);

    /// kT in eV.
    pub fn kt(&self) -> f64 {
        self.kt
    }

    /// The scalar loss: [`ScoreConsistency::forward_per_molecule`] averaged over molecules.
    ///
    /// # Errors
    /// As [`ScoreConsistency::forward_per_molecule`].
    pub fn forward(
        &self,
        eps_hat: &Tensor,
        level: &NoiseLevel,
        forces: Forces<'_>,
        layout: &BatchLayout,
    ) -> Result<Tensor> {
        self.forward_per_molecule(eps_hat, level, forces, layout)?.mean()
    }

    /// `(1/n_b) sum_{i in b} ||eps_hat_i - eps*_i||^2` of every molecule.
    ///
    /// `eps_hat` is the noise prediction at the structure noised from the clean
    /// one at `level`; the forces are those of the clean structure.
    ///
    /// # Shapes
    /// `eps_hat`: `[N, 3]`; the clean structure or labels: `[N, 3]`, the dtype of `eps_hat`;
    /// `level`: `[B]`.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::Dtype`], [`Error::Device`], [`Error::NonFinite`]
    /// for `eps_hat`, the clean structure, the labels, the level or the energy's
    /// output; [`Error::InvalidArgument`] for labels with [`GradientFlow::ToEnergy`]
    /// (nothing would learn); [`Error::NoGraph`] when the energy does not depend
    /// on the positions.
    pub fn forward_per_molecule(
        &self,
        eps_hat: &Tensor,
        level: &NoiseLevel,
        forces: Forces<'_>,
        layout: &BatchLayout,
    ) -> Result<PerMolecule> {
        let mut finite = self.checks.finite();
        finite.atoms3("eps_hat", eps_hat, layout)?;
        // The level fixes the dtype: it was made for the coordinates it scales.
        let kind = level.alpha().kind();
        check::same_kind("eps_hat", eps_hat, kind)?;
        level.check(layout, kind)?;
        let energy_learns = self.flow != GradientFlow::ToStructure;
        let f = match forces {
            Forces::Labels(labels) => {
                if self.flow == GradientFlow::ToEnergy {
                    return Err(Error::InvalidArgument {
                        arg: "forces",
                        reason: "force labels with GradientFlow::ToEnergy leave nothing to train; pass Forces::Model"
                            .into(),
                    });
                }
                finite.atoms3("forces", labels, layout)?;
                check::same_kind("forces", labels, kind)?;
                labels.detach()
            }
            Forces::Model { energy, at } => {
                finite.atoms3("clean structure", at, layout)?;
                check::same_kind("clean structure", at, kind)?;
                // Only `Both` follows the clean structure's own graph: under
                // `ToEnergy` it is a constant like everything but the energy model.
                let x = if self.flow == GradientFlow::Both && at.requires_grad() {
                    at.shallow_clone()
                } else {
                    leaf_copy(at)
                };
                let (_, grad) = energy_and_grad(
                    energy,
                    &x,
                    layout,
                    Backward::create_graph_if(energy_learns),
                    &mut finite,
                )?;
                grad.f_neg()?
            }
        };
        let target = target_unchecked(&f, level, self.kt, layout)?;
        let (eps_hat, target) = match self.flow {
            GradientFlow::ToStructure => (eps_hat.shallow_clone(), target.detach()),
            GradientFlow::ToEnergy => (eps_hat.detach(), target),
            GradientFlow::Both => (eps_hat.shallow_clone(), target),
        };
        let values = squared_error_per_molecule(&eps_hat, &target, layout)?;
        finite.add("score loss (the energy's forces)", &values);
        finite.finish()?;
        PerMolecule::new(values, None, self.checks)
    }
}
