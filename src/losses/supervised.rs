use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check;
use crate::error::Result;
use crate::losses::masked_mean;

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
/// use physcon::{losses::EnergyLoss, BatchLayout};
/// use tch::{Device, Tensor};
/// let layout = BatchLayout::from_counts(&[2, 4], Device::Cpu)?;
/// let pred = Tensor::from_slice(&[1.0f64, 8.0]);
/// let target = Tensor::from_slice(&[0.0f64, 0.0]);
/// let loss = EnergyLoss::default().per_atom(true).forward(&pred, &target, &layout, None)?;
/// assert_eq!(loss.double_value(&[]), (0.25 + 4.0) / 2.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EnergyLoss {
    /// The error function.
    pub metric: EnergyMetric,
    /// Divide each molecule's error by its atom count first (MACE's convention).
    pub per_atom: bool,
}

impl EnergyLoss {
    /// Sets the error function.
    pub fn metric(mut self, metric: EnergyMetric) -> Self {
        self.metric = metric;
        self
    }

    /// Sets per-atom normalisation.
    pub fn per_atom(mut self, per_atom: bool) -> Self {
        self.per_atom = per_atom;
        self
    }

    /// The loss for predicted and reference energies.
    ///
    /// Reference entries outside the mask are ignored, NaN included.
    ///
    /// # Shapes
    /// `pred`, `target`: `[B]` floats (eV); `mask`: `[B]` bool (true = labelled).
    ///
    /// # Errors
    /// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`] for any argument;
    /// [`crate::Error::NonFinite`] for `pred` or a labelled `target`;
    /// [`crate::Error::NonPositive`] for a Huber `delta` that is not positive.
    pub fn forward(
        &self,
        pred: &Tensor,
        target: &Tensor,
        layout: &BatchLayout,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let b = layout.num_molecules();
        check::molecules("pred", pred, layout)?;
        check::float("target", target)?;
        check::same_kind("target", target, pred.kind())?;
        check::device("target", target, layout)?;
        check::shape("target", target, &[b], "[B]")?;
        if let Some(mask) = mask {
            check::mask("mask", mask, layout, b)?;
        }
        let target = labelled(target, mask)?;
        check::finite("target", &target)?;
        let mut err = pred.f_sub(&target)?;
        if self.per_atom {
            err = err.f_div(&layout.counts_as(pred.kind(), 1)?)?;
        }
        let per_molecule = match self.metric {
            EnergyMetric::L1 => err.f_abs()?,
            EnergyMetric::Mse => err.f_square()?,
            EnergyMetric::Huber { delta } => {
                let delta = check::positive("delta", delta)?;
                let abs = err.f_abs()?;
                let quadratic = err.f_square()?.f_mul_scalar(0.5)?;
                let linear = abs.f_sub_scalar(0.5 * delta)?.f_mul_scalar(delta)?;
                quadratic.f_where_self(&abs.f_le(delta)?, &linear)?
            }
        };
        masked_mean(&per_molecule, mask)
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
///
/// # Shapes
/// `pred`, `target`: `[N, 3]` (eV/Å); `mask`: `[B]` bool.
///
/// # Errors
/// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`] for any argument;
/// [`crate::Error::NonFinite`] for `pred` or a labelled `target`.
pub fn force_loss(
    pred: &Tensor,
    target: &Tensor,
    layout: &BatchLayout,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    check::atoms3("pred", pred, layout)?;
    check::float("target", target)?;
    check::same_kind("target", target, pred.kind())?;
    check::device("target", target, layout)?;
    check::shape("target", target, &[layout.num_atoms(), 3], "[N, 3]")?;
    if let Some(mask) = mask {
        check::mask("mask", mask, layout, layout.num_molecules())?;
    }
    let atom_mask = match mask {
        Some(mask) => Some(layout.expand_unchecked(mask)?.f_unsqueeze(1)?),
        None => None,
    };
    let target = labelled(target, atom_mask.as_ref())?;
    check::finite("target", &target)?;
    let per_atom = pred
        .f_sub(&target)?
        .f_square()?
        .f_mean_dim(1, false, pred.kind())?;
    let per_molecule = layout.mean_unchecked(&per_atom)?;
    masked_mean(&per_molecule, mask)
}

/// The target with unlabelled entries replaced by zeros, so a NaN placeholder
/// cannot leak into the loss or its gradient.
fn labelled(target: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let target = target.detach();
    match mask {
        None => Ok(target),
        Some(mask) => Ok(target.f_where_self(mask, &target.f_zeros_like()?)?),
    }
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
        let loss = EnergyLoss::default()
            .metric(EnergyMetric::Huber { delta: 1.0 })
            .forward(&pred, &target, &layout, None)?;
        assert!((loss.double_value(&[]) - (0.125 + 2.5) / 2.0).abs() < 1e-12);
        let err = EnergyLoss::default()
            .metric(EnergyMetric::Huber { delta: 0.0 })
            .forward(&pred, &target, &layout, None);
        assert!(matches!(err, Err(Error::NonPositive { arg: "delta", .. })));
        Ok(())
    }
}
