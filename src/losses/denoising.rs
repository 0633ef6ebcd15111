use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check;
use crate::error::Result;
use crate::losses::{Checks, PerMolecule};

/// Denoising (eps-prediction) loss.
///
/// ```text
/// L = mean_b (1/n_b) sum_{i in b} || eps_hat_i - eps_i ||^2
/// ```
///
/// Dimensionless (noise is in units of the noise scale).
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::{losses::DenoisingLoss, BatchLayout};
/// use tch::{Device, Kind, Tensor};
/// let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
/// let eps = Tensor::zeros([2, 3], (Kind::Double, Device::Cpu));
/// let eps_hat = eps.ones_like();
/// assert_eq!(DenoisingLoss::new().forward(&eps_hat, &eps, &layout)?.double_value(&[]), 3.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DenoisingLoss {
    checks: Checks,
}

impl DenoisingLoss {
    /// The denoising loss (it has no settings to validate).
    pub fn new() -> Self {
        Self::default()
    }

    setter!(checks);

    /// The scalar loss: [`DenoisingLoss::forward_per_molecule`] averaged over molecules.
    ///
    /// # Errors
    /// As [`DenoisingLoss::forward_per_molecule`].
    pub fn forward(&self, eps_hat: &Tensor, eps: &Tensor, layout: &BatchLayout) -> Result<Tensor> {
        self.forward_per_molecule(eps_hat, eps, layout)?.mean()
    }

    /// `(1/n_b) sum_i ||eps_hat_i - eps_i||^2` of every molecule.
    ///
    /// # Shapes
    /// `eps_hat`, `eps`: `[N, 3]`, one float dtype, on the layout's device.
    ///
    /// # Errors
    /// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`],
    /// [`crate::Error::NonFinite`] for either argument.
    pub fn forward_per_molecule(
        &self,
        eps_hat: &Tensor,
        eps: &Tensor,
        layout: &BatchLayout,
    ) -> Result<PerMolecule> {
        let mut finite = self.checks.finite();
        finite.atoms3("eps_hat", eps_hat, layout)?;
        finite.atoms3("eps", eps, layout)?;
        check::same_kind("eps", eps, eps_hat.kind())?;
        finite.finish()?;
        // The noise is the target: a constant even if it carries a graph.
        PerMolecule::new(
            squared_error_per_molecule(eps_hat, &eps.detach(), layout)?,
            None,
            self.checks,
        )
    }
}

/// `(1/n_b) sum_{i in b} ||a_i - b_i||^2` per molecule `[B]`, without checks.
pub(crate) fn squared_error_per_molecule(a: &Tensor, b: &Tensor, layout: &BatchLayout) -> Result<Tensor> {
    let diff = a.f_sub(b)?;
    let per_atom = diff.f_square()?.f_sum_dim_intlist(1, false, a.kind())?;
    layout.mean_unchecked(&per_atom)
}
