//! Evaluation metrics: Kabsch RMSD, energy gap, energy MAE.

use tch::{Kind, Tensor};

use crate::batch::BatchLayout;
use crate::check;
use crate::energy::{evaluate, EnergyModel};
use crate::error::Result;
use crate::losses::{EnergyLoss, EnergyMetric};

/// RMSD (Å) per molecule after optimal superposition by a proper rotation (Kabsch), all atoms.
///
/// ```text
/// RMSD_b = min_{Q in SO(3)} sqrt( (1/n_b) sum_{i in b} || Q (x_i - c_x) - (y_i - c_y) ||^2 )
/// ```
///
/// with `c` the centroids. The rotation comes from the SVD of the 3x3
/// covariance with the determinant sign fixed (no reflections), which is
/// optimal for planar and linear molecules too, where the SVD is degenerate.
/// It is found without autograd: by the envelope theorem the gradient of the
/// minimum is that of the objective at the optimal rotation held fixed, so the
/// gradient is exact and never passes through the SVD's unstable backward. At
/// RMSD 0 the gradient is 0 (a subgradient), not NaN. "0" includes round-off:
/// a superposition of exact copies leaves a residual of a few machine epsilons
/// (whose gradient would be an arbitrary unit vector), so a mean squared
/// deviation below `(1000 eps)^2` times the molecule's mean `|x_i - c_x|^2 +
/// |y_i - c_y|^2` is reported as exactly 0 with gradient 0 (`eps` of f64 for
/// f64 input, of f32 otherwise: RMSD below ~2e-13 or ~1e-4 of the molecule's size).
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::{metrics::kabsch_rmsd, BatchLayout};
/// use tch::{Device, Tensor};
/// let layout = BatchLayout::from_counts(&[3], Device::Cpu)?;
/// let x = Tensor::from_slice(&[0.0f64, 0., 0., 1., 0., 0., 0., 2., 0.]).reshape([3, 3]);
/// // The same triangle rotated 90° about z and shifted.
/// let y = Tensor::from_slice(&[5.0f64, 5., 5., 5., 6., 5., 3., 5., 5.]).reshape([3, 3]);
/// let rmsd = kabsch_rmsd(&x, &y, &layout)?;
/// assert!(rmsd.double_value(&[0]) < 1e-12);
/// # Ok(()) }
/// ```
///
/// # Shapes
/// `pred`, `reference`: `[N, 3]` (Å), one float dtype; returns `[B]`.
///
/// # Errors
/// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`],
/// [`crate::Error::NonFinite`] for either structure.
pub fn kabsch_rmsd(pred: &Tensor, reference: &Tensor, layout: &BatchLayout) -> Result<Tensor> {
    check::atoms3("pred", pred, layout)?;
    check::atoms3("reference", reference, layout)?;
    check::same_kind("reference", reference, pred.kind())?;
    let p = layout.centre_unchecked(pred)?;
    let q = layout.centre_unchecked(reference)?;
    let rotation = tch::no_grad(|| optimal_rotations(&p.detach(), &q.detach(), layout))?;
    let rotated = layout
        .expand_unchecked(&rotation)?
        .f_matmul(&p.f_unsqueeze(2)?)?
        .f_squeeze_dim(2)?;
    let sq = rotated
        .f_sub(&q)?
        .f_square()?
        .f_sum_dim_intlist(1, false, pred.kind())?;
    let msd = layout.mean_unchecked(&sq)?;
    let positive = msd.f_gt_tensor(&round_off_floor(&p, &q, layout)?)?;
    let safe = msd.f_where_self(&positive, &msd.f_ones_like()?)?;
    Ok(safe.f_sqrt()?.f_where_self(&positive, &msd.f_zeros_like()?)?)
}

/// The mean squared deviation `[B]` (detached) below which the RMSD is round-off:
/// `(1000 eps)^2 mean_i (|p_i|^2 + |q_i|^2)` for centred `p`, `q`.
fn round_off_floor(p: &Tensor, q: &Tensor, layout: &BatchLayout) -> Result<Tensor> {
    let kind = p.kind();
    let eps = if kind == Kind::Double {
        f64::EPSILON
    } else {
        f64::from(f32::EPSILON)
    };
    let (p, q) = (p.detach(), q.detach());
    let size = p
        .f_square()?
        .f_add(&q.f_square()?)?
        .f_sum_dim_intlist(1, false, kind)?;
    Ok(layout.mean_unchecked(&size)?.f_mul_scalar((1e3 * eps).powi(2))?)
}

/// Proper rotations `[B, 3, 3]` minimising `sum_i || Q p_i - q_i ||^2` for centred `p`, `q`.
fn optimal_rotations(p: &Tensor, q: &Tensor, layout: &BatchLayout) -> Result<Tensor> {
    let kind = p.kind();
    // LAPACK has no half-precision SVD.
    let work = if matches!(kind, Kind::Half | Kind::BFloat16) {
        Kind::Float
    } else {
        kind
    };
    let (p, q) = (p.f_to_kind(work)?, q.f_to_kind(work)?);
    let outer = p.f_unsqueeze(2)?.f_mul(&q.f_unsqueeze(1)?)?;
    let h = layout.sum_unchecked(&outer)?;
    let (u, _, v) = h.f_svd(true, true)?;
    let ut = u.f_transpose(1, 2)?;
    let det = v.f_matmul(&ut)?.f_det()?;
    let ones = det.f_ones_like()?;
    let d = ones.f_where_self(&det.f_ge(0.0)?, &ones.f_neg()?)?;
    let diag = Tensor::f_stack(&[ones.shallow_clone(), ones, d], 1)?;
    let rotation = v.f_mul(&diag.f_unsqueeze(1)?)?.f_matmul(&ut)?;
    Ok(rotation.f_to_kind(kind)?)
}

/// Energy gap `E(pred) - E(reference)` (eV) per molecule under a given energy, without graph.
///
/// With the model's own energy this says how far a generated structure sits
/// above the reference on the model's surface; with an external energy it is
/// the evaluation's EGap.
///
/// # Shapes
/// `pred`, `reference`: `[N, 3]` (Å); returns `[B]`.
///
/// # Errors
/// The structure checks; an energy output that is not a finite `[B]` of the same dtype.
pub fn energy_gap<E: EnergyModel + ?Sized>(
    energy: &E,
    pred: &Tensor,
    reference: &Tensor,
    layout: &BatchLayout,
) -> Result<Tensor> {
    let mut finite = check::Finite::full();
    finite.atoms3("pred", pred, layout)?;
    finite.atoms3("reference", reference, layout)?;
    check::same_kind("reference", reference, pred.kind())?;
    let gap = tch::no_grad(|| {
        let e_pred = evaluate(energy, pred, layout, &mut finite)?;
        let e_ref = evaluate(energy, reference, layout, &mut finite)?;
        Ok::<_, crate::Error>(e_pred.f_sub(&e_ref)?)
    })?;
    finite.finish()?;
    Ok(gap)
}

/// Mean absolute energy error (eV) over labelled molecules, without graph.
///
/// ```text
/// MAE = sum_b m_b |E_pred,b - E_ref,b| / max(sum_b m_b, 1)
/// ```
///
/// # Shapes
/// `pred`, `target`: `[B]` (eV); `mask`: `[B]` bool.
///
/// # Errors
/// As [`EnergyLoss::forward`].
pub fn energy_mae(
    pred: &Tensor,
    target: &Tensor,
    mask: Option<&Tensor>,
    layout: &BatchLayout,
) -> Result<Tensor> {
    let loss = EnergyLoss::new(EnergyMetric::L1)?;
    tch::no_grad(|| loss.forward(pred, target, mask, layout))
}
