use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check::{self, Finite};
use crate::energy::{
    energy_and_grad, evaluate, grad_of_energy, grad_or_zeros, leaf_copy, Backward, EnergyModel,
};
use crate::error::Result;
use crate::losses::{surrogate, Checks, GradientFlow, PerMolecule};

/// Optimality consistency, the literal law: the energy gradient vanishes at equilibrium.
///
/// ```text
/// L = mean_b (1/n_b) sum_{i in b} || dE(R_hat)/dR_hat_i ||^2        [eV²/Å²]
/// ```
///
/// Zero exactly at stationary points of the predicted energy (saddles
/// included). Its gradient is a Hessian-vector product: the energy model must
/// be twice differentiable (SiLU, not ReLU). For the first-order form see
/// [`EnergyDescentLoss`].
///
/// The [`GradientFlow`] says which model learns. With the default
/// [`GradientFlow::ToStructure`] the energy model is an exact frozen teacher:
/// the loss is evaluated on a detached leaf copy `R'` of the structure,
/// `v = dL/dR'` is taken with autograd restricted to `R'`, and the returned
/// value has the value `L` and the gradient `v` with respect to the structure,
/// so no energy parameter receives gradient even when both heads share an
/// encoder.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::losses::{GradientFlow, StationarityLoss};
/// use physcon::BatchLayout;
/// use tch::{Device, Kind, Tensor};
/// let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
/// // A harmonic bond with rest length 1 Å and k = 2 eV/Å².
/// let bond = |pos: &Tensor| -> physcon::Result<Tensor> {
///     let r = (pos.get(0) - pos.get(1)).norm();
///     Ok((r - 1.0).square().reshape([1]))
/// };
/// let stretched = Tensor::from_slice(&[0.0f64, 0., 0., 1.5, 0., 0.]).reshape([2, 3]).set_requires_grad(true);
/// let loss = StationarityLoss::new().flow(GradientFlow::ToStructure).forward(&bond, &stretched, &layout)?;
/// // |dE/dr| = 2 * 0.5 = 1 eV/Å on each atom: L = (1 + 1) / 2.
/// assert!((loss.double_value(&[]) - 1.0).abs() < 1e-12);
/// loss.backward();
/// assert!(stretched.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StationarityLoss {
    flow: GradientFlow,
    checks: Checks,
}

impl StationarityLoss {
    /// The stationarity loss, flow [`GradientFlow::ToStructure`].
    pub fn new() -> Self {
        Self::default()
    }

    setter!(flow);

    setter!(checks);

    /// The scalar loss of `structure` under `energy`.
    ///
    /// # Errors
    /// As [`StationarityLoss::forward_per_molecule`].
    pub fn forward<E: EnergyModel + ?Sized>(
        &self,
        energy: &E,
        structure: &Tensor,
        layout: &BatchLayout,
    ) -> Result<Tensor> {
        self.run(energy, structure, layout, Reduce::Mean)
    }

    /// `(1/n_b) sum_{i in b} ||dE/dR_hat_i||^2` of every molecule.
    ///
    /// # Shapes
    /// `structure`: `[N, 3]` (Å); `energy` maps `[N, 3]` to `[B]` (eV).
    ///
    /// # Errors
    /// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`], [`crate::Error::NonFinite`]
    /// for the structure or the energy's output or gradient; [`crate::Error::NoGraph`]
    /// when the energy does not depend on the positions through autograd.
    pub fn forward_per_molecule<E: EnergyModel + ?Sized>(
        &self,
        energy: &E,
        structure: &Tensor,
        layout: &BatchLayout,
    ) -> Result<PerMolecule> {
        let values = self.run(energy, structure, layout, Reduce::None)?;
        PerMolecule::new(values, None, self.checks)
    }

    fn run<E: EnergyModel + ?Sized>(
        &self,
        energy: &E,
        structure: &Tensor,
        layout: &BatchLayout,
        reduce: Reduce,
    ) -> Result<Tensor> {
        let mut finite = self.checks.finite();
        finite.atoms3("structure", structure, layout)?;
        let value = with_flow(
            self.flow,
            structure,
            layout,
            reduce,
            Dependence::Checked,
            &mut finite,
            |x, finite| {
                let (_, grad) = energy_and_grad(energy, x, layout, Backward::CreateGraph, finite)?;
                let per_atom = grad.f_square()?.f_sum_dim_intlist(1, false, x.kind())?;
                layout.mean_unchecked(&per_atom)
            },
        )?;
        finite.finish()?;
        Ok(value)
    }
}

/// Optimality consistency, first order: push the structure downhill on the predicted energy.
///
/// ```text
/// L = mean_b (1/n_b) ( E(R_hat_b) - sg(E(R_ref_b)) )                [eV/atom]
/// ```
///
/// `sg` stops the gradient; the value reads as a per-atom energy gap to the
/// reference structure `R_ref` (e.g. the training structure the generated one
/// was made from). Needs no double backward. The [`GradientFlow`] works as for
/// [`StationarityLoss`].
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::losses::EnergyDescentLoss;
/// use physcon::testing::{PairEnergy, PairPotential};
/// use physcon::BatchLayout;
/// use tch::{Device, Tensor};
/// let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
/// let bond = PairEnergy::new(PairPotential::Harmonic { k: 2.0, r0: 1.0 }, &layout)?;
/// let at_rest = Tensor::from_slice(&[0.0f64, 0., 0., 1.0, 0., 0.]).reshape([2, 3]);
/// let stretched = Tensor::from_slice(&[0.0f64, 0., 0., 1.5, 0., 0.]).reshape([2, 3]);
/// let loss = EnergyDescentLoss::new().forward(&bond, &stretched, &at_rest, &layout)?;
/// assert!((loss.double_value(&[]) - 0.25 / 2.0).abs() < 1e-12); // 0.25 eV over 2 atoms
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnergyDescentLoss {
    flow: GradientFlow,
    checks: Checks,
}

impl EnergyDescentLoss {
    /// The energy-descent loss, flow [`GradientFlow::ToStructure`].
    pub fn new() -> Self {
        Self::default()
    }

    setter!(flow);

    setter!(checks);

    /// The scalar loss of `structure` against `reference` under `energy`.
    ///
    /// # Errors
    /// As [`EnergyDescentLoss::forward_per_molecule`].
    pub fn forward<E: EnergyModel + ?Sized>(
        &self,
        energy: &E,
        structure: &Tensor,
        reference: &Tensor,
        layout: &BatchLayout,
    ) -> Result<Tensor> {
        self.run(energy, structure, reference, layout, Reduce::Mean)
    }

    /// `(E(R_hat_b) - sg E(R_ref,b)) / n_b` of every molecule.
    ///
    /// # Shapes
    /// `structure`, `reference`: `[N, 3]` (Å), one float dtype; `energy` maps `[N, 3]` to `[B]` (eV).
    ///
    /// # Errors
    /// [`crate::Error::Shape`], [`crate::Error::Dtype`], [`crate::Error::Device`], [`crate::Error::NonFinite`]
    /// for the structures or the energy's outputs; [`crate::Error::NoGraph`] when the
    /// energy does not depend on the positions through autograd.
    pub fn forward_per_molecule<E: EnergyModel + ?Sized>(
        &self,
        energy: &E,
        structure: &Tensor,
        reference: &Tensor,
        layout: &BatchLayout,
    ) -> Result<PerMolecule> {
        let values = self.run(energy, structure, reference, layout, Reduce::None)?;
        PerMolecule::new(values, None, self.checks)
    }

    fn run<E: EnergyModel + ?Sized>(
        &self,
        energy: &E,
        structure: &Tensor,
        reference: &Tensor,
        layout: &BatchLayout,
        reduce: Reduce,
    ) -> Result<Tensor> {
        let mut finite = self.checks.finite();
        finite.atoms3("structure", structure, layout)?;
        finite.atoms3("reference", reference, layout)?;
        check::same_kind("reference", reference, structure.kind())?;
        let reference_energy = {
            let _guard = tch::no_grad_guard();
            evaluate(energy, reference, layout, &mut finite)?
        };
        let flow = self.flow;
        let value = with_flow(
            flow,
            structure,
            layout,
            reduce,
            Dependence::Required,
            &mut finite,
            |x, finite| {
                let e = evaluate(energy, x, layout, finite)?;
                if flow != GradientFlow::ToStructure {
                    // Under ToStructure `with_flow` finds a missing path for free; here it costs one backward.
                    let _ = grad_of_energy(&e, x, Backward::KeepForward)?;
                }
                Ok(e.f_sub(&reference_energy)?
                    .f_div(&layout.counts_as(x.kind(), 1)?)?)
            },
        )?;
        finite.finish()?;
        Ok(value)
    }
}

/// Whether `with_flow` must refuse a loss that does not depend on the structure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dependence {
    /// The loss itself checked that the energy depends on the positions (a
    /// loss that still does not depend on them, e.g. the stationarity of a
    /// linear energy, is a legitimate zero gradient).
    Checked,
    /// No path from the structure to the loss means the energy ignores its positions.
    Required,
}

/// Whether a consistency loss returns its scalar or its per-molecule values.
#[derive(Clone, Copy)]
enum Reduce {
    Mean,
    None,
}

/// Evaluates `per_molecule` at the structure under the gradient flow, reduced
/// as asked, and queues the result's finiteness check.
///
/// `per_molecule(x)` returns `[B]` with the graph of every path from `x`.
fn with_flow(
    flow: GradientFlow,
    structure: &Tensor,
    layout: &BatchLayout,
    reduce: Reduce,
    dependence: Dependence,
    finite: &mut Finite,
    per_molecule: impl Fn(&Tensor, &mut Finite) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut value_at = |x: &Tensor| -> Result<Tensor> {
        let values = per_molecule(x, finite)?;
        let value = match reduce {
            Reduce::Mean => values.f_mean(x.kind())?,
            Reduce::None => values,
        };
        finite.add("optimality loss (the energy's gradient)", &value);
        Ok(value)
    };
    match flow {
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
            // Molecules do not interact, so the gradient of the sum holds each
            // molecule's own gradient on its atoms.
            let total = if value.dim() == 0 {
                value.shallow_clone()
            } else {
                value.f_sum(value.kind())?
            };
            let v = match dependence {
                Dependence::Checked => grad_or_zeros(&total, &x, Backward::Free)?,
                Dependence::Required => grad_of_energy(&total, &x, Backward::Free)?,
            };
            surrogate(&value, &v, structure, layout)
        }
    }
}
