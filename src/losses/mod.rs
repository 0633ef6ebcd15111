//! Losses: free functions and small config structs, one file per family.
//!
//! Every loss returns a scalar tensor that keeps its autograd graph, reduces
//! per molecule first (mean over its atoms) and then over molecules, and
//! checks its inputs (shape, dtype, device, finiteness) before touching them.
//!
//! | loss | formula | units |
//! |---|---|---|
//! | [`EnergyLoss`] | `mean_b l((E_pred - E_ref)_b [/ n_b])` | eV (or eV/atom), squared for MSE |
//! | [`force_loss`] | `mean_b (1/3n_b) sum_i ||F_pred,i - F_ref,i||^2` | eV²/Å² |
//! | [`denoising_loss`] | `mean_b (1/n_b) sum_i ||eps_hat_i - eps_i||^2` | dimensionless |
//! | [`OptimalityLoss`] | see [`Optimality`] | eV²/Å² or eV/atom |
//! | [`ScoreConsistency`] | `mean_b (1/n_b) sum_i ||eps_hat_i - eps*_i||^2`, `eps* = -(s_t/a_t) F/kT` | dimensionless |
//!
//! [`LossTerms`] combines named, weighted terms and keeps a detached breakdown for logging.

mod denoising;
mod optimality;
mod score;
mod supervised;
mod terms;

pub use denoising::denoising_loss;
pub use optimality::{Optimality, OptimalityLoss};
pub use score::{score_target, Forces, ScoreConsistency};
pub use supervised::{force_loss, EnergyLoss, EnergyMetric};
pub use terms::{LossTerms, TermValue};

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

/// `value.detach() + (v * (x - x.detach())).sum()`: a scalar whose value is
/// `value` and whose gradient with respect to `x` is `v`, with no path to
/// anything else `value` was computed from.
///
/// This is the exact frozen-teacher recipe: `v` was taken on a detached leaf
/// copy of `x`, so no parameter of the teacher ever sees a gradient.
pub(crate) fn surrogate(value: &tch::Tensor, v: &tch::Tensor, x: &tch::Tensor) -> crate::Result<tch::Tensor> {
    let value = value.detach();
    if !x.requires_grad() {
        return Ok(value);
    }
    let delta = x.f_sub(&x.detach())?;
    let link = v.detach().f_mul(&delta)?.f_sum(value.kind())?;
    Ok(value.f_add(&link)?)
}

/// Masked mean over molecules: `sum_b m_b l_b / max(sum_b m_b, 1)`.
///
/// A batch with no labelled molecule gives a zero that keeps the graph.
pub(crate) fn masked_mean(
    per_molecule: &tch::Tensor,
    mask: Option<&tch::Tensor>,
) -> crate::Result<tch::Tensor> {
    let kind = per_molecule.kind();
    match mask {
        None => Ok(per_molecule.f_mean(kind)?),
        Some(mask) => {
            let zeros = per_molecule.f_zeros_like()?;
            let kept = per_molecule.f_where_self(mask, &zeros)?;
            let count = mask.f_sum(kind)?.f_clamp_min(1.0)?;
            Ok(kept.f_sum(kind)?.f_div(&count)?)
        }
    }
}
