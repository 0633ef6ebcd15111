use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check;
use crate::error::Result;

/// Denoising (eps-prediction) loss.
///
/// ```text
/// L = mean_b (1/n_b) sum_{i in b} || eps_hat_i - eps_i ||^2
/// ```
///
/// Dimensionless (noise is in units of the noise scale).
///
/// # Shapes
/// `eps_hat`, `eps`: `[N, 3]`, one float dtype, on the layout's device.
///
/// # Errors
/// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`],
/// [`crate::Error::NonFinite`] for either argument.
pub fn denoising_loss(eps_hat: &Tensor, eps: &Tensor, layout: &BatchLayout) -> Result<Tensor> {
    check::atoms3("eps_hat", eps_hat, layout)?;
    check::atoms3("eps", eps, layout)?;
    check::same_kind("eps", eps, eps_hat.kind())?;
    squared_error_per_atom_mean(eps_hat, eps, layout)
}

/// `mean_b (1/n_b) sum_i ||a_i - b_i||^2` without checks.
pub(crate) fn squared_error_per_atom_mean(a: &Tensor, b: &Tensor, layout: &BatchLayout) -> Result<Tensor> {
    let diff = a.f_sub(b)?;
    let per_atom = diff.f_square()?.f_sum_dim_intlist(1, false, a.kind())?;
    layout.molecule_mean_of_atoms(&per_atom)
}
