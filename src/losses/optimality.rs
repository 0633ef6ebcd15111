use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check;
use crate::energy::{energy_and_grad, evaluate, grad_or_zeros, leaf_copy, EnergyModel};
use crate::error::{Error, Result};
use crate::losses::{surrogate, GradientFlow};

/// The two forms of optimality consistency (equilibrium = energy minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Optimality {
    /// The literal law: the energy gradient vanishes at equilibrium.
    ///
    /// ```text
    /// L = mean_b (1/n_b) sum_{i in b} || dE(R_hat)/dR_hat_i ||^2        [eV²/Å²]
    /// ```
    ///
    /// Zero exactly at stationary points of the predicted energy (saddles
    /// included). Its gradient is a Hessian-vector product: the energy model
    /// must be twice differentiable.
    #[default]
    Stationarity,
    /// First order: push the structure downhill on the predicted energy.
    ///
    /// ```text
    /// L = mean_b (1/n_b) ( E(R_hat_b) - sg(E(R_ref_b)) )                [eV/atom]
    /// ```
    ///
    /// `sg` stops the gradient; the value reads as a per-atom energy gap to
    /// the reference structure. Needs no double backward.
    EnergyDescent,
}

/// Optimality consistency: a generated structure should be a minimum of the predicted energy.
///
/// The form is an explicit choice ([`Optimality`]); the [`GradientFlow`] says
/// which model learns. With the default [`GradientFlow::ToStructure`] the
/// energy model is an exact frozen teacher: the loss is evaluated on a
/// detached leaf copy `R'` of the structure, `v = dL/dR'` is taken with
/// autograd restricted to `R'`, and the returned scalar has the value `L` and
/// the gradient `v` with respect to the structure, so no energy parameter
/// receives gradient even when both heads share an encoder.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::losses::{GradientFlow, OptimalityLoss};
/// use physcon::BatchLayout;
/// use tch::{Device, Kind, Tensor};
/// let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
/// // A harmonic bond with rest length 1 Å and k = 2 eV/Å².
/// let bond = |pos: &Tensor| -> physcon::Result<Tensor> {
///     let r = (pos.get(0) - pos.get(1)).norm();
///     Ok((r - 1.0).square().reshape([1]))
/// };
/// let stretched = Tensor::from_slice(&[0.0f64, 0., 0., 1.5, 0., 0.]).reshape([2, 3]).set_requires_grad(true);
/// let loss = OptimalityLoss::stationarity().flow(GradientFlow::ToStructure)
///     .forward(&bond, &stretched, None, &layout)?;
/// // |dE/dr| = 2 * 0.5 = 1 eV/Å on each atom: L = (1 + 1) / 2.
/// assert!((loss.double_value(&[]) - 1.0).abs() < 1e-12);
/// loss.backward();
/// assert!(stretched.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptimalityLoss {
    /// Which form of the law.
    pub form: Optimality,
    /// Which model receives gradient.
    pub flow: GradientFlow,
}

impl OptimalityLoss {
    /// The [`Optimality::Stationarity`] form, flow [`GradientFlow::ToStructure`].
    pub fn stationarity() -> Self {
        Self {
            form: Optimality::Stationarity,
            flow: GradientFlow::default(),
        }
    }

    /// The [`Optimality::EnergyDescent`] form, flow [`GradientFlow::ToStructure`].
    pub fn energy_descent() -> Self {
        Self {
            form: Optimality::EnergyDescent,
            flow: GradientFlow::default(),
        }
    }

    /// Sets the gradient flow.
    pub fn flow(mut self, flow: GradientFlow) -> Self {
        self.flow = flow;
        self
    }

    /// The loss of `structure` under `energy`.
    ///
    /// `reference` is the structure whose (stopped) energy
    /// [`Optimality::EnergyDescent`] subtracts; it is required there and must
    /// be `None` for [`Optimality::Stationarity`], so a misplaced argument is
    /// caught rather than ignored.
    ///
    /// # Shapes
    /// `structure`, `reference`: `[N, 3]` (Å), one float dtype; `energy` maps `[N, 3]` to `[B]` (eV).
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::Dtype`], [`Error::Device`], [`Error::NonFinite`]
    /// for the structures or the energy's output; [`Error::InvalidArgument`] for a
    /// missing or misplaced `reference`; [`Error::NoGraph`] when the energy does
    /// not depend on the positions through autograd (the stationarity form).
    pub fn forward<E: EnergyModel + ?Sized>(
        &self,
        energy: &E,
        structure: &Tensor,
        reference: Option<&Tensor>,
        layout: &BatchLayout,
    ) -> Result<Tensor> {
        check::atoms3("structure", structure, layout)?;
        let reference_energy = match (self.form, reference) {
            (Optimality::Stationarity, None) => None,
            (Optimality::Stationarity, Some(_)) => {
                return Err(Error::InvalidArgument {
                    arg: "reference",
                    reason: "the stationarity form takes no reference structure".into(),
                })
            }
            (Optimality::EnergyDescent, None) => {
                return Err(Error::InvalidArgument {
                    arg: "reference",
                    reason: "the energy-descent form needs the reference structure R_ref".into(),
                })
            }
            (Optimality::EnergyDescent, Some(reference)) => {
                check::atoms3("reference", reference, layout)?;
                check::same_kind("reference", reference, structure.kind())?;
                let _guard = tch::no_grad_guard();
                Some(evaluate(energy, reference, layout)?)
            }
        };
        let value_at = |x: &Tensor| -> Result<Tensor> {
            let value = self.value(energy, x, reference_energy.as_ref(), layout)?;
            check::finite("optimality loss (the energy's gradient)", &value)?;
            Ok(value)
        };
        match self.flow {
            GradientFlow::Both => {
                let x = if structure.requires_grad() {
                    structure.shallow_clone()
                } else {
                    leaf_copy(structure)
                };
                value_at(&x)
            }
            GradientFlow::ToEnergy => value_at(&leaf_copy(structure)),
            GradientFlow::ToStructure => {
                let x = leaf_copy(structure);
                let value = value_at(&x)?;
                let v = grad_or_zeros(&value, &x, false)?;
                surrogate(&value, &v, structure)
            }
        }
    }

    /// The loss at `x` (which requires grad), with the graph of every path.
    fn value<E: EnergyModel + ?Sized>(
        &self,
        energy: &E,
        x: &Tensor,
        reference_energy: Option<&Tensor>,
        layout: &BatchLayout,
    ) -> Result<Tensor> {
        match (self.form, reference_energy) {
            (Optimality::EnergyDescent, Some(reference_energy)) => {
                let e = evaluate(energy, x, layout)?;
                let gap = e
                    .f_sub(reference_energy)?
                    .f_div(&layout.counts_as(x.kind(), 1)?)?;
                Ok(gap.f_mean(x.kind())?)
            }
            _ => {
                let (_, grad) = energy_and_grad(energy, x, layout, true)?;
                let per_atom = grad.f_square()?.f_sum_dim_intlist(1, false, x.kind())?;
                layout.molecule_mean_of_atoms(&per_atom)
            }
        }
    }
}
