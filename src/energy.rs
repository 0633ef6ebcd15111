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
/// differentiable in `pos` (twice, for [`crate::losses::StationarityLoss`]:
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

/// Energies and forces from one forward of an energy model.
#[derive(Debug)]
pub struct EnergyAndForces {
    /// Molecule energies `[B]` (eV), with their graph to the model's parameters.
    pub energy: Tensor,
    /// Forces `F = -dE/dR` `[N, 3]` (eV/Å), with a graph when asked for.
    pub forces: Tensor,
}

/// Energies and forces `F = -dE/dR` of an energy model at `pos`, from one forward.
///
/// What a trainer feeds the energy and force losses
/// ([`crate::losses::EnergyLoss`], [`crate::losses::ForceLoss`]): the energy keeps
/// its graph to the model's parameters, and with `create_graph` the forces keep
/// theirs, so a force loss trains the model through a double backward (the
/// graph of the forward is kept for the energy loss's backward too). Without
/// `create_graph` the forces are constants and no parameter's `.grad` is touched.
///
/// `pos` that carries a graph (a generated structure) keeps it under
/// `create_graph`; otherwise the forces are taken on a detached copy.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::testing::{PairEnergy, PairPotential};
/// use physcon::{energy_and_forces, BatchLayout};
/// use tch::{Device, Tensor};
/// let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
/// let model = PairEnergy::new(PairPotential::Harmonic { k: 2.0, r0: 1.0 }, &layout)?;
/// let pos = Tensor::from_slice(&[0.0f64, 0., 0., 1.5, 0., 0.]).reshape([2, 3]);
/// let out = energy_and_forces(&model, &pos, &layout, true)?;
/// // E = k/2 (r - r0)^2 = 0.25 eV; the bond pulls the atoms together with 1 eV/Å.
/// assert!((out.energy.double_value(&[0]) - 0.25).abs() < 1e-12);
/// assert!((out.forces.double_value(&[0, 0]) - 1.0).abs() < 1e-12);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Shape`], [`Error::Dtype`], [`Error::Device`], [`Error::NonFinite`] for
/// `pos`; [`Error::Shape`] or [`Error::NonFinite`] for a model output that is not
/// finite `[B]`, [`Error::NonFinite`] for non-finite forces; [`Error::NoGraph`] when
/// the energy does not depend on the positions through autograd. The finiteness
/// checks cost one device-to-host read.
pub fn energy_and_forces<E: EnergyModel + ?Sized>(
    model: &E,
    pos: &Tensor,
    layout: &BatchLayout,
    create_graph: bool,
) -> Result<EnergyAndForces> {
    let mut finite = check::Finite::full();
    finite.atoms3("pos", pos, layout)?;
    let x = if create_graph && pos.requires_grad() {
        pos.shallow_clone()
    } else {
        leaf_copy(pos)
    };
    // The energy keeps its graph for the energy loss's backward, whether or not the forces get one.
    let backward = if create_graph {
        Backward::CreateGraph
    } else {
        Backward::KeepForward
    };
    let (energy, grad) = energy_and_grad(model, &x, layout, backward, &mut finite)?;
    finite.add("forces", &grad);
    finite.finish()?;
    Ok(EnergyAndForces {
        energy,
        forces: grad.f_neg()?,
    })
}

/// Forces `F = -dE/dR` `[N, 3]` (eV/Å) of an energy model at `pos`: the forces
/// of [`energy_and_forces`], for when the energy itself is not needed.
///
/// # Errors
/// As [`energy_and_forces`].
pub fn forces<E: EnergyModel + ?Sized>(
    model: &E,
    pos: &Tensor,
    layout: &BatchLayout,
    create_graph: bool,
) -> Result<Tensor> {
    Ok(energy_and_forces(model, pos, layout, create_graph)?.forces)
}

/// A detached copy of `x` that requires grad: the leaf the frozen-teacher recipe differentiates.
pub(crate) fn leaf_copy(x: &Tensor) -> Tensor {
    x.detach().set_requires_grad(true)
}

/// Evaluates the model and checks its output is `[B]` of the input's dtype (finiteness queued).
pub(crate) fn evaluate<E: EnergyModel + ?Sized>(
    model: &E,
    pos: &Tensor,
    layout: &BatchLayout,
    finite: &mut check::Finite,
) -> Result<Tensor> {
    let energy = model.energy(pos)?;
    finite.molecules("energy model output", &energy, layout)?;
    check::same_kind("energy model output", &energy, pos.kind())?;
    Ok(energy)
}

/// How a backward pass treats graphs: what is left of the forward's graph, and
/// whether the gradient gets a graph of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backward {
    /// The forward's graph is freed; the gradient is a constant.
    Free,
    /// The forward's graph is kept for another backward; the gradient is a constant.
    KeepForward,
    /// The forward's graph is kept and the gradient has its own (a double backward follows).
    CreateGraph,
}

impl Backward {
    /// [`Backward::CreateGraph`] when the gradient must be differentiated again, else [`Backward::Free`].
    pub(crate) fn create_graph_if(create_graph: bool) -> Self {
        if create_graph {
            Self::CreateGraph
        } else {
            Self::Free
        }
    }
}

/// `dE/dx` of the model at `x` (which must require grad), with or without its graph.
///
/// Callers queue what they return (forces, or a loss built from the gradient)
/// in `finite`, which catches a non-finite gradient without a pass of its own.
pub(crate) fn energy_and_grad<E: EnergyModel + ?Sized>(
    model: &E,
    x: &Tensor,
    layout: &BatchLayout,
    backward: Backward,
    finite: &mut check::Finite,
) -> Result<(Tensor, Tensor)> {
    let energy = evaluate(model, x, layout, finite)?;
    let grad = grad_of_energy(&energy, x, backward)?;
    Ok((energy, grad))
}

/// Why an energy without a path to its positions is refused: its forces would
/// be zeros and every consistency loss a silent zero.
pub(crate) const NO_POSITION_DEPENDENCE: &str = "it does not depend on the positions it was given (autograd \
    finds no path from them to the energies, so the forces would be zero and the loss a silent zero): the model \
    must compute from its argument, not from a tensor captured when it was built or from a detached copy";

/// `dE/dx` for energies `[B]` computed at `x`; refuses an energy without a graph
/// (libtorch would crash) and one that does not depend on `x` (a silent zero).
pub(crate) fn grad_of_energy(energy: &Tensor, x: &Tensor, backward: Backward) -> Result<Tensor> {
    if !energy.requires_grad() {
        return Err(Error::NoGraph {
            arg: "energy model output",
            reason: "the energy must be computed from the positions it is given, with grad enabled",
        });
    }
    let keep_graph = backward != Backward::Free;
    let create_graph = backward == Backward::CreateGraph;
    let total = energy.f_sum(energy.kind())?;
    let grad = Tensor::f_run_backward(&[total], std::slice::from_ref(x), keep_graph, create_graph)?.remove(0);
    if !grad.defined() {
        return Err(Error::NoGraph {
            arg: "energy model output",
            reason: NO_POSITION_DEPENDENCE,
        });
    }
    Ok(grad)
}

/// `d output / d input` as `torch.autograd.grad` would return it, zeros where
/// the output does not depend on the input.
///
/// libtorch segfaults on an output without a graph, so that case is answered
/// with zeros here instead of reaching it.
pub(crate) fn grad_or_zeros(output: &Tensor, input: &Tensor, backward: Backward) -> Result<Tensor> {
    let mut grads = grads_or_zeros(output, std::slice::from_ref(input), backward)?;
    Ok(grads.remove(0))
}

/// [`grad_or_zeros`] for several inputs in one backward pass.
pub(crate) fn grads_or_zeros(output: &Tensor, inputs: &[Tensor], backward: Backward) -> Result<Vec<Tensor>> {
    if !output.requires_grad() {
        return inputs.iter().map(|x| Ok(x.f_zeros_like()?)).collect();
    }
    let keep_graph = backward != Backward::Free;
    let create_graph = backward == Backward::CreateGraph;
    let grads = Tensor::f_run_backward(&[output], inputs, keep_graph, create_graph)?;
    grads
        .into_iter()
        .zip(inputs)
        .map(|(g, x)| if g.defined() { Ok(g) } else { Ok(x.f_zeros_like()?) })
        .collect()
}
