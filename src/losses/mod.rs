//! Losses, one convention for all of them.
//!
//! Every loss is a small value type: built once with its settings validated
//! (`new(..)`, which returns [`crate::Result`] when a setting can be wrong),
//! refined by chainable setters whose arguments cannot be invalid
//! ([`GradientFlow`], [`Checks`], ...), then called per batch:
//!
//! - `forward(inputs.., layout)`: the scalar loss, reduced per molecule first
//!   (mean over its atoms) and then over molecules, with its autograd graph;
//! - `forward_per_molecule(inputs.., layout)`: the same before the last
//!   reduction, a [`PerMolecule`] of `[B]` values for logging, masking and
//!   weighting ([`PerMolecule::weighted_mean`]); its `mean()` equals `forward`
//!   in value and gradient.
//!
//! Inputs come first, the [`crate::BatchLayout`] last. Inputs are checked for
//! shape, dtype, device and finiteness (see [`Checks`] for the cost).
//!
//! | loss | formula per molecule `b` | units |
//! |---|---|---|
//! | [`EnergyLoss`] | `l((E_pred - E_ref)_b [/ n_b])` | eV (or eV/atom), squared for MSE |
//! | [`ForceLoss`] | `(1/3n_b) sum_i ||F_pred,i - F_ref,i||^2` | eV²/Å² |
//! | [`DenoisingLoss`] | `(1/n_b) sum_i ||eps_hat_i - eps_i||^2` | dimensionless |
//! | [`StationarityLoss`] | `(1/n_b) sum_i ||dE(R_hat)/dR_hat_i||^2` | eV²/Å² |
//! | [`EnergyDescentLoss`] | `(E(R_hat_b) - sg E(R_ref,b)) / n_b` | eV/atom |
//! | [`ScoreConsistency`] | `(1/n_b) sum_i ||eps_hat_i - eps*_i||^2`, `eps* = -(s/a) F/kT` | dimensionless |
//!
//! [`LossTerms`] combines named, weighted terms and keeps a detached breakdown for logging.

/// The chainable setters the losses share: `checks` on every loss, `flow` on
/// the consistency losses.
macro_rules! setter {
    (checks) => {
        /// How much of the inputs' values is checked (see [`crate::losses::Checks`]).
        pub fn checks(mut self, checks: crate::losses::Checks) -> Self {
            self.checks = checks;
            self
        }
    };
    (flow) => {
        /// Sets which model receives gradient (see [`crate::losses::GradientFlow`]).
        pub fn flow(mut self, flow: crate::losses::GradientFlow) -> Self {
            self.flow = flow;
            self
        }
    };
}

mod denoising;
mod optimality;
mod score;
mod supervised;
mod terms;

use ndarray::Array1;
use tch::Tensor;

pub use denoising::DenoisingLoss;
pub use optimality::{EnergyDescentLoss, StationarityLoss};
pub use score::{score_target, Forces, ScoreConsistency, KT_LIMIT};
pub use supervised::{EnergyLoss, EnergyMetric, ForceLoss};
pub use terms::{LossTerms, TermValue};

use crate::batch::BatchLayout;
use crate::check;
use crate::convert;
use crate::error::{Error, Result};

/// How much a loss checks of the values (not the shapes) of its tensors.
///
/// Shape, dtype, device and graph checks read only tensor metadata and always
/// run. Finiteness needs the values on the host: with [`Checks::Full`] (the
/// default) every finiteness check of one loss call is folded into a single
/// reduction and **one** device-to-host read, at the end of the call (on CUDA,
/// one synchronisation per loss). [`Checks::Metadata`] skips it, for a trainer
/// that checks its total loss itself and must not synchronise per term; a
/// non-finite input then shows up as a non-finite loss instead of an
/// [`crate::Error::NonFinite`] naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checks {
    /// Metadata checks, plus finiteness of every input and of the result (one host read).
    #[default]
    Full,
    /// Metadata checks only: no host read.
    Metadata,
}

impl Checks {
    /// The finiteness checks of one loss call under this setting.
    pub(crate) fn finite(self) -> check::Finite {
        match self {
            Checks::Full => check::Finite::full(),
            Checks::Metadata => check::Finite::skipped(),
        }
    }
}

/// A loss before its reduction over molecules: one value per molecule, `[B]`.
///
/// For a loss with a label mask, [`PerMolecule::labelled`] says which values
/// count; the others are zero and leave every reduction (their labels may be
/// NaN placeholders). The values keep their autograd graph.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::losses::{EnergyLoss, EnergyMetric};
/// use physcon::BatchLayout;
/// use tch::{Device, Tensor};
/// let layout = BatchLayout::from_counts(&[1, 1, 1], Device::Cpu)?;
/// let pred = Tensor::from_slice(&[1.0f64, 2.0, 3.0]);
/// let target = Tensor::from_slice(&[0.0f64, f64::NAN, 0.0]);
/// let labelled = Tensor::from_slice(&[true, false, true]);
/// let per = EnergyLoss::new(EnergyMetric::Mse)?.forward_per_molecule(&pred, &target, Some(&labelled), &layout)?;
/// assert_eq!(Vec::<f64>::try_from(per.values())?, vec![1.0, 0.0, 9.0]);
/// assert_eq!(per.mean()?.double_value(&[]), 5.0);
/// // Weights count only where labelled: (1 * 1 + 3 * 9) / (1 + 3).
/// let w = Tensor::from_slice(&[1.0f64, 100.0, 3.0]);
/// assert_eq!(per.weighted_mean(&w)?.double_value(&[]), 7.0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PerMolecule {
    values: Tensor,
    labelled: Option<Tensor>,
    checks: Checks,
}

impl PerMolecule {
    /// Values `[B]`, zeroed where `labelled` is false.
    pub(crate) fn new(values: Tensor, labelled: Option<&Tensor>, checks: Checks) -> Result<Self> {
        let values = match labelled {
            None => values,
            Some(mask) => zero_outside(&values, mask)?,
        };
        Ok(Self {
            values,
            labelled: labelled.map(Tensor::shallow_clone),
            checks,
        })
    }

    /// The per-molecule values `[B]` (zero where unlabelled).
    pub fn values(&self) -> &Tensor {
        &self.values
    }

    /// Which molecules carry the label (`[B]` bool), or `None` when all do.
    pub fn labelled(&self) -> Option<&Tensor> {
        self.labelled.as_ref()
    }

    /// The values `[B]` as `f64` on the host (one copy), NaN where unlabelled:
    /// [`PerMolecule::values`] holds zeros there for the reductions, but a table
    /// of results must tell a missing label from a zero loss (while any
    /// molecule is labelled, `numpy.nanmean` of the array is [`PerMolecule::mean`]).
    ///
    /// # Errors
    /// Only libtorch's.
    pub fn to_array(&self) -> Result<Array1<f64>> {
        match &self.labelled {
            None => convert::host(&self.values),
            Some(mask) => {
                let missing = self.values.f_full_like(f64::NAN)?;
                convert::host(&self.values.detach().f_where_self(mask, &missing)?)
            }
        }
    }

    /// The values `[B]`, dropping the mask.
    pub fn into_values(self) -> Tensor {
        self.values
    }

    /// `sum_b m_b l_b / max(sum_b m_b, 1)`: the mean over labelled molecules
    /// (all without a mask). With no labelled molecule, a zero that keeps the graph.
    ///
    /// # Errors
    /// Only libtorch's.
    pub fn mean(&self) -> Result<Tensor> {
        let kind = self.values.kind();
        match &self.labelled {
            None => Ok(self.values.f_mean(kind)?),
            Some(mask) => {
                let count = mask.f_sum(kind)?.f_clamp_min(1.0)?;
                Ok(self.values.f_sum(kind)?.f_div(&count)?)
            }
        }
    }

    /// `sum_b w_b m_b l_b / sum_b w_b m_b`: the weighted mean over labelled
    /// molecules, for per-molecule importance (dataset or level weights). When
    /// no labelled molecule has weight, a zero that keeps the graph.
    ///
    /// The weights are constants: they receive no gradient, even when they
    /// carry a graph (as labels and masks do not). To learn weights, multiply
    /// [`PerMolecule::values`] by them yourself.
    ///
    /// # Shapes
    /// `weights`: `[B]`, the dtype and device of the values, finite and `>= 0`.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::Dtype`], [`Error::Device`] for `weights`;
    /// [`Error::InvalidArgument`] for a negative or non-finite weight (unless the
    /// loss was built with [`Checks::Metadata`]; the test costs one host read).
    pub fn weighted_mean(&self, weights: &Tensor) -> Result<Tensor> {
        let kind = self.values.kind();
        check::float("weights", weights)?;
        check::same_kind("weights", weights, kind)?;
        check::shape("weights", weights, &self.values.size(), "[B]")?;
        check::on_device("weights", weights, self.values.device())?;
        if self.checks == Checks::Full && self.values.numel() > 0 {
            let stats = check::host_scalars(&[weights.f_min()?, weights.f_sum(tch::Kind::Double)?])?;
            let (low, total) = (stats[0], stats[1]);
            if !(low >= 0.0 && total.is_finite()) {
                return Err(Error::InvalidArgument {
                    arg: "weights",
                    reason: format!("must be finite and >= 0 (smallest {low}, sum {total})"),
                });
            }
        }
        // Weights are constants, like labels, even when they carry a graph.
        let weights = weights.detach();
        let weights = match &self.labelled {
            None => weights,
            Some(mask) => zero_outside(&weights, mask)?,
        };
        let total = weights.f_sum(kind)?;
        let one = total.f_ones_like()?;
        let total = total.f_where_self(&total.f_gt(0.0)?, &one)?;
        Ok(self.values.f_mul(&weights)?.f_sum(kind)?.f_div(&total)?)
    }
}

/// `t` where `mask` holds and zero elsewhere: unlabelled entries (NaN
/// placeholders included) reach neither a value nor a gradient.
pub(crate) fn zero_outside(t: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(t.f_where_self(mask, &t.f_zeros_like()?)?)
}

/// Which models a consistency loss trains.
///
/// A consistency loss couples the energy model and the structure (diffusion)
/// model; the flow says which side of the coupling receives gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradientFlow {
    /// The energy model is a frozen teacher: gradient reaches the structure
    /// (and through it the structure model) but no parameter used only by the
    /// energy evaluation, even when both heads share an encoder. The default,
    /// and the point of the method: accurate energies correct cheap structures.
    #[default]
    ToStructure,
    /// Plain backward into everything that took part.
    Both,
    /// The structure is a constant; only the energy model moves.
    ToEnergy,
}

/// A tensor whose value is `value` and whose gradient with respect to `x` is
/// `v`, with no path to anything else `value` was computed from:
/// `value.detach() + sum(v * (x - x.detach()))`, the sum taken over every atom
/// for a scalar `value` and per molecule for a `[B]` one.
///
/// This is the exact frozen-teacher recipe: `v` was taken on a detached leaf
/// copy of `x`, so no parameter of the teacher ever sees a gradient. Per
/// molecule it is exact when molecules do not interact (no gradient leaks
/// between molecules of a batch).
pub(crate) fn surrogate(value: &Tensor, v: &Tensor, x: &Tensor, layout: &BatchLayout) -> Result<Tensor> {
    let value = value.detach();
    if !x.requires_grad() {
        return Ok(value);
    }
    let delta = x.f_sub(&x.detach())?;
    let product = v.detach().f_mul(&delta)?;
    let link = if value.dim() == 0 {
        product.f_sum(value.kind())?
    } else {
        layout.sum_unchecked(&product.f_sum_dim_intlist(1, false, value.kind())?)?
    };
    Ok(value.f_add(&link)?)
}
