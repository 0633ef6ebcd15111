use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check::{self, Finite};
use crate::error::Result;
use crate::losses::{zero_outside, Checks, PerMolecule};

/// The per-molecule error function of [`EnergyLoss`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum EnergyMetric {
    /// `|e|`.
    L1,
    /// `e^2`.
    #[default]
    Mse,
    /// `e^2 / 2` for `|e| <= delta`, `delta (|e| - delta / 2)` beyond (PyTorch's `HuberLoss`).
    Huber {
        /// Where the quadratic part ends, in the unit of the error (eV or eV/atom).
        delta: f64,
    },
}

/// Energy loss on molecule energies.
///
/// ```text
/// e_b = E_pred,b - E_ref,b            (or (E_pred,b - E_ref,b) / n_b with per_atom)
/// L   = sum_b m_b l(e_b) / max(sum_b m_b, 1)
/// ```
///
/// with `l` from [`EnergyMetric`] and `m` the optional label mask (all ones
/// without one). Units: eV (L1, Huber) or eV² (MSE); per atom with `per_atom`.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::losses::{EnergyLoss, EnergyMetric};
/// use physcon::BatchLayout;
/// use tch::{Device, Tensor};
/// let layout = BatchLayout::from_counts(&[2, 4], Device::Cpu)?;
/// let pred = Tensor::from_slice(&[1.0f64, 8.0]);
/// let target = Tensor::from_slice(&[0.0f64, 0.0]);
/// let loss = EnergyLoss::new(EnergyMetric::Mse)?.per_atom(true).forward(&pred, &target, None, &layout)?;
/// assert_eq!(loss.double_value(&[]), (0.25 + 4.0) / 2.0);
/// # Ok(()) }
/// ```
///
/// Built only by [`EnergyLoss::new`], which validates the metric: there is no
/// `Default` that could skip it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyLoss {
    metric: EnergyMetric,
    per_atom: bool,
    checks: Checks,
}

impl EnergyLoss {
    /// An energy loss with the given error function, not per atom.
    ///
    /// # Errors
    /// [`crate::Error::NonPositive`] for a Huber `delta` that is not positive and finite.
    pub fn new(metric: EnergyMetric) -> Result<Self> {
        if let EnergyMetric::Huber { delta } = metric {
            check::positive("delta", delta)?;
        }
        Ok(Self {
            metric,
            per_atom: false,
            checks: Checks::default(),
        })
    }

    /// Divide each molecule's error by its atom count first (MACE's convention).
    pub fn per_atom(mut self, per_atom: bool) -> Self {
        self.per_atom = per_atom;
        self
    }

    setter!(checks);

    /// The scalar loss: [`EnergyLoss::forward_per_molecule`] averaged over labelled molecules.
    ///
    /// # Errors
    /// As [`EnergyLoss::forward_per_molecule`].
    pub fn forward(
        &self,
        pred: &Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
        layout: &BatchLayout,
    ) -> Result<Tensor> {
        self.forward_per_molecule(pred, target, mask, layout)?.mean()
    }

    /// The error `l(e_b)` of every molecule.
    ///
    /// Reference entries outside the mask are ignored, NaN included.
    ///
    /// # Shapes
    /// `pred`, `target`: `[B]` floats (eV); `mask`: `[B]` bool (true = labelled).
    ///
    /// # Errors
    /// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`] for any argument;
    /// [`crate::Error::NonFinite`] for `pred` or a labelled `target`.
    pub fn forward_per_molecule(
        &self,
        pred: &Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
        layout: &BatchLayout,
    ) -> Result<PerMolecule> {
        let mut finite = self.checks.finite();
        let target = checked_labels(&mut finite, pred, target, mask, layout, Level::Molecule)?;
        let mut err = pred.f_sub(&target)?;
        if self.per_atom {
            err = err.f_div(&layout.counts_as(pred.kind(), 1)?)?;
        }
        let per_molecule = match self.metric {
            EnergyMetric::L1 => err.f_abs()?,
            EnergyMetric::Mse => err.f_square()?,
            EnergyMetric::Huber { delta } => {
                let abs = err.f_abs()?;
                let quadratic = err.f_square()?.f_mul_scalar(0.5)?;
                let linear = abs.f_sub_scalar(0.5 * delta)?.f_mul_scalar(delta)?;
                quadratic.f_where_self(&abs.f_le(delta)?, &linear)?
            }
        };
        finite.finish()?;
        PerMolecule::new(per_molecule, mask, self.checks)
    }
}

/// Force loss: per-atom component MSE with an optional mask over molecules.
///
/// ```text
/// L = sum_b m_b [ (1/n_b) sum_{i in b} (1/3) ||F_pred,i - F_ref,i||^2 ] / max(sum_b m_b, 1)
/// ```
///
/// Units eV²/Å². Molecules outside the mask (frames without force labels)
/// contribute nothing, whatever their reference holds (NaN included); a batch
/// without labelled molecules gives a zero that keeps the graph. MACE and
/// NequIP weight this term far above the energy: the weight is the caller's.
/// Take `F_pred` and the energy from one forward with [`crate::energy_and_forces`].
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::{losses::ForceLoss, BatchLayout};
/// use tch::{Device, Kind, Tensor};
/// let layout = BatchLayout::from_counts(&[1, 1], Device::Cpu)?;
/// let pred = Tensor::from_slice(&[3.0f64, 0., 0., 1., 1., 1.]).reshape([2, 3]);
/// let target = Tensor::zeros([2, 3], (Kind::Double, Device::Cpu));
/// let per = ForceLoss::new().forward_per_molecule(&pred, &target, None, &layout)?;
/// assert_eq!(Vec::<f64>::try_from(per.values())?, vec![3.0, 1.0]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForceLoss {
    checks: Checks,
}

impl ForceLoss {
    /// The force loss (it has no settings to validate).
    pub fn new() -> Self {
        Self::default()
    }

    setter!(checks);

    /// The scalar loss: [`ForceLoss::forward_per_molecule`] averaged over labelled molecules.
    ///
    /// # Errors
    /// As [`ForceLoss::forward_per_molecule`].
    pub fn forward(
        &self,
        pred: &Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
        layout: &BatchLayout,
    ) -> Result<Tensor> {
        self.forward_per_molecule(pred, target, mask, layout)?.mean()
    }

    /// `(1/3n_b) sum_i ||F_pred,i - F_ref,i||^2` of every molecule.
    ///
    /// # Shapes
    /// `pred`, `target`: `[N, 3]` (eV/Å); `mask`: `[B]` bool (true = labelled).
    ///
    /// # Errors
    /// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`] for any argument;
    /// [`crate::Error::NonFinite`] for `pred` or a labelled `target`.
    pub fn forward_per_molecule(
        &self,
        pred: &Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
        layout: &BatchLayout,
    ) -> Result<PerMolecule> {
        let mut finite = self.checks.finite();
        let target = checked_labels(&mut finite, pred, target, mask, layout, Level::Atom)?;
        let per_atom = pred
            .f_sub(&target)?
            .f_square()?
            .f_mean_dim(1, false, pred.kind())?;
        let per_molecule = layout.mean_unchecked(&per_atom)?;
        finite.finish()?;
        PerMolecule::new(per_molecule, mask, self.checks)
    }
}

/// Whether a supervised loss compares molecule values `[B]` or atom vectors `[N, 3]`.
#[derive(Clone, Copy)]
enum Level {
    Molecule,
    Atom,
}

/// Checks a prediction and its labels of one level, and returns the labels as
/// constants with unlabelled entries replaced by zeros, so a NaN placeholder
/// cannot leak into the loss or its gradient. Finiteness is queued in `finite`.
fn checked_labels(
    finite: &mut Finite,
    pred: &Tensor,
    target: &Tensor,
    mask: Option<&Tensor>,
    layout: &BatchLayout,
    level: Level,
) -> Result<Tensor> {
    let words = match level {
        Level::Molecule => {
            finite.molecules("pred", pred, layout)?;
            "[B]"
        }
        Level::Atom => {
            finite.atoms3("pred", pred, layout)?;
            "[N, 3]"
        }
    };
    check::float("target", target)?;
    check::same_kind("target", target, pred.kind())?;
    check::float_meta("target", target, layout, &pred.size(), words)?;
    let target = target.detach();
    let target = match mask {
        None => target,
        Some(mask) => {
            check::mask("mask", mask, layout, layout.num_molecules())?;
            let mask = match level {
                Level::Molecule => mask.shallow_clone(),
                Level::Atom => layout.expand_unchecked(mask)?.f_unsqueeze(1)?,
            };
            zero_outside(&target, &mask)?
        }
    };
    finite.add("target", &target);
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use tch::Device;

    #[test]
    fn huber_matches_both_branches() -> Result<()> {
        let layout = BatchLayout::from_counts(&[1, 1], Device::Cpu)?;
        let pred = Tensor::from_slice(&[0.5f64, 3.0]);
        let target = Tensor::from_slice(&[0.0f64, 0.0]);
        let loss =
            EnergyLoss::new(EnergyMetric::Huber { delta: 1.0 })?.forward(&pred, &target, None, &layout)?;
        assert!((loss.double_value(&[]) - (0.125 + 2.5) / 2.0).abs() < 1e-12);
        let err = EnergyLoss::new(EnergyMetric::Huber { delta: 0.0 });
        assert!(matches!(err, Err(Error::NonPositive { arg: "delta", .. })));
        Ok(())
    }
}
