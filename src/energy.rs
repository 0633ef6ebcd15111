//! The energy-model interface and forces.
//!
//! Losses that need an energy take it as an [`EnergyModel`]: anything that
//! maps positions `[N, 3]` (Å) to molecule energies `[B]` (eV). Closures
//! qualify, so any model works: capture species, bonds and the layout, and
//! expose positions only.
//!
//! ```
//! # fn main() -> physcon::Result<()> {
//! use physcon::{BatchLayout, EnergyModel};
//! use tch::{Device, Kind, Tensor};
//! let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
//! // E = sum_i |r_i|^2 / 2 per molecule: a harmonic well at the origin.
//! let well = |pos: &Tensor| layout.sum(&(pos * pos).sum_dim_intlist(1, false, Kind::Double).g_mul_scalar(0.5));
//! let pos = Tensor::from_slice(&[1.0f64, 0., 0., 0., 2., 0.]).reshape([2, 3]);
//! let f = physcon::forces(&well, &pos, &layout, false)?;
//! assert_eq!(Vec::<f64>::try_from(f.reshape([-1]))?, vec![-1., 0., 0., 0., -2., 0.]);
//! # Ok(()) }
//! ```

use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check;
use crate::error::{Error, Result};

/// A potential-energy surface over a fixed batch of molecules.
///
/// `energy(pos)` returns `[B]` energies in eV for positions `[N, 3]` in Å, in
/// the molecule order of the batch layout it was built for. It must be
/// differentiable in `pos` (twice, for [`crate::losses::Optimality::Stationarity`]:
/// use SiLU, not ReLU).
pub trait EnergyModel {
    /// Molecule energies `[B]` (eV) at positions `[N, 3]` (Å).
    ///
    /// # Errors
    /// Whatever the model reports.
    fn energy(&self, pos: &Tensor) -> Result<Tensor>;
}

impl<F> EnergyModel for F
where
    F: Fn(&Tensor) -> Result<Tensor> + ?Sized,
{
    fn energy(&self, pos: &Tensor) -> Result<Tensor> {
        self(pos)
    }
}

/// Forces `F = -dE/dR` `[N, 3]` (eV/Å) of an energy model at `pos`.
///
/// With `create_graph` the forces keep their graph, so a force loss can train
/// the model (a double backward); without it they are constants and no
/// parameter's `.grad` is touched.
///
/// # Errors
/// Those of the `pos` checks ([`Error::Shape`], [`Error::Dtype`], [`Error::Device`],
/// [`Error::NonFinite`]); [`Error::Shape`] or [`Error::NonFinite`] for a model output
/// that is not finite `[B]`; [`Error::NoGraph`] when the energy does not depend
/// on the positions through autograd.
pub fn forces<E: EnergyModel + ?Sized>(
    model: &E,
    pos: &Tensor,
    layout: &BatchLayout,
    create_graph: bool,
) -> Result<Tensor> {
    check::atoms3("pos", pos, layout)?;
    let x = if create_graph && pos.requires_grad() {
        pos.shallow_clone()
    } else {
        leaf_copy(pos)
    };
    let (_, grad) = energy_and_grad(model, &x, layout, create_graph)?;
    check::finite("forces", &grad)?;
    Ok(grad.f_neg()?)
}

/// A detached copy of `x` that requires grad: the leaf the frozen-teacher recipe differentiates.
pub(crate) fn leaf_copy(x: &Tensor) -> Tensor {
    x.detach().set_requires_grad(true)
}

/// Evaluates the model and checks its output is finite `[B]` of the input's dtype.
pub(crate) fn evaluate<E: EnergyModel + ?Sized>(
    model: &E,
    pos: &Tensor,
    layout: &BatchLayout,
) -> Result<Tensor> {
    let energy = model.energy(pos)?;
    check::float_tensor(
        "energy model output",
        &energy,
        layout,
        &[layout.num_molecules()],
        "[B]",
    )?;
    check::same_kind("energy model output", &energy, pos.kind())?;
    Ok(energy)
}

/// `dE/dx` of the model at `x` (which must require grad), with or without its graph.
pub(crate) fn energy_and_grad<E: EnergyModel + ?Sized>(
    model: &E,
    x: &Tensor,
    layout: &BatchLayout,
    create_graph: bool,
) -> Result<(Tensor, Tensor)> {
    let energy = evaluate(model, x, layout)?;
    if !energy.requires_grad() {
        return Err(Error::NoGraph {
            arg: "energy model output",
            reason: "the energy must be computed from the positions it is given, with grad enabled",
        });
    }
    // Callers check what they return (forces, or a loss built from the gradient),
    // which catches a non-finite gradient with one scalar read instead of a pass over it.
    let grad = grad_or_zeros(&energy.f_sum(energy.kind())?, x, create_graph)?;
    Ok((energy, grad))
}

/// `d output / d input` as `torch.autograd.grad` would return it, zeros where
/// the output does not depend on the input.
///
/// libtorch segfaults on an output without a graph, so that case is answered
/// with zeros here instead of reaching it.
pub(crate) fn grad_or_zeros(output: &Tensor, input: &Tensor, create_graph: bool) -> Result<Tensor> {
    let mut grads = grads_or_zeros(output, std::slice::from_ref(input), create_graph)?;
    Ok(grads.remove(0))
}

/// [`grad_or_zeros`] for several inputs in one backward pass.
pub(crate) fn grads_or_zeros(output: &Tensor, inputs: &[Tensor], create_graph: bool) -> Result<Vec<Tensor>> {
    if !output.requires_grad() {
        return inputs.iter().map(|x| Ok(x.f_zeros_like()?)).collect();
    }
    let grads = Tensor::f_run_backward(&[output], inputs, create_graph, create_graph)?;
    grads
        .into_iter()
        .zip(inputs)
        .map(|(g, x)| if g.defined() { Ok(g) } else { Ok(x.f_zeros_like()?) })
        .collect()
}
