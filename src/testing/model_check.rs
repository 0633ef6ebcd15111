//! [`check_energy_model`]: the checks NequIP runs on its own models
//! (`model_tests_basic.py`), for a user's energy model over ragged batches.

use std::fmt;

use tch::{Device, Kind, Tensor};

use super::{gradcheck, gradgradcheck, rotation, GradcheckOptions, GradcheckReport};
use crate::batch::MolBatch;
use crate::check;
use crate::energy::{energy_and_forces, evaluate, grad_or_zeros, leaf_copy, Backward};
use crate::error::{Error, Result};

/// An absolute and a relative tolerance: a difference passes when it is at
/// most `atol + rtol * scale`, `scale` being the largest magnitude compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part (in the unit of the quantity: eV, eV/Å).
    pub atol: f64,
    /// Relative part.
    pub rtol: f64,
}

impl Tolerance {
    fn bound(&self, scale: f64) -> f64 {
        self.atol + self.rtol * scale
    }
}

/// What [`check_energy_model`] does and how strictly. The defaults suit a
/// model evaluated in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCheck {
    /// The rotation (a quaternion `(w, x, y, z)`, see [`rotation`]) applied
    /// about the origin, not the centroid: NequIP's convention, which also
    /// exposes a model that depends on absolute orientation and position.
    pub rotation: [f64; 4],
    /// The rigid shift (Å) of the translation check.
    pub translation: [f64; 3],
    /// Energies (eV) and forces (eV/Å) of transformed or re-batched inputs
    /// against the expected ones. Default `atol` 1e-8 (NequIP's f64
    /// equivariance tolerance) and `rtol` 1e-10, room for the rounding of
    /// large total energies (atomic reference energies of thousands of eV).
    pub symmetry: Tolerance,
    /// The largest `|dE_b/dR_i|` (eV/Å) allowed for an atom `i` outside
    /// molecule `b`. Default 0: autograd returns exact zeros for atoms an
    /// energy does not use, so any other value is a coupling.
    pub leak: f64,
    /// Forces against central differences of the energy ([`gradcheck`]).
    pub forces: GradcheckOptions,
    /// Hessian-vector products against central differences of the gradient
    /// ([`gradgradcheck`]).
    pub hessian: GradcheckOptions,
    /// Half-length (Å) of the segments of the integrated-Hessian check: the
    /// atom moving most moves this far each way. Default 0.01 Å, long enough
    /// to cross the kinks a ReLU network has on that scale (the steps of
    /// [`gradgradcheck`] are too short to meet one).
    pub segment: f64,
    /// Directions (fixed, deterministic) of the integrated-Hessian check. Default 2.
    pub segment_directions: usize,
    /// The gradient change across a segment against the integral of the
    /// Hessian-vector product along it (eV/Å). Simpson's rule is exact to
    /// `O(segment^5)` on a smooth model: default `atol` 1e-6, `rtol` 1e-4.
    pub segment_tolerance: Tolerance,
}

impl Default for ModelCheck {
    fn default() -> Self {
        Self {
            rotation: [0.5, -0.3, 0.7, 0.41],
            translation: [3.7, -2.9, 5.3],
            symmetry: Tolerance {
                atol: 1e-8,
                rtol: 1e-10,
            },
            leak: 0.0,
            forces: GradcheckOptions::default(),
            hessian: GradcheckOptions::default(),
            segment: 1e-2,
            segment_directions: 2,
            segment_tolerance: Tolerance {
                atol: 1e-6,
                rtol: 1e-4,
            },
        }
    }
}

/// The checks of [`check_energy_model`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// Energies invariant and forces equivariant under a rotation about the origin.
    Rotation,
    /// Energies and forces invariant under a rigid shift.
    Translation,
    /// Invariance to the order of atoms within each molecule (positions,
    /// species and bonds permuted together; forces permuted with them).
    Permutation,
    /// Invariance to the order of molecules in the batch.
    MoleculeOrder,
    /// Molecules do not interact: no gradient of one molecule's energy reaches
    /// another's atoms, and a molecule evaluated alone gets the energy and
    /// forces it gets in the batch.
    Isolation,
    /// `F = -dE/dR` against central finite differences of the energy.
    Forces,
    /// Twice differentiable: Hessian-vector products against finite
    /// differences of the gradient, locally and across short segments.
    SecondOrder,
}

impl Check {
    /// The check's name in reports and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rotation => "rotation",
            Self::Translation => "translation",
            Self::Permutation => "permutation",
            Self::MoleculeOrder => "molecule order",
            Self::Isolation => "isolation",
            Self::Forces => "forces",
            Self::SecondOrder => "second order",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One measured quantity of a check: its worst error and what was allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The check it belongs to.
    pub check: Check,
    /// What was compared, with its unit.
    pub quantity: &'static str,
    /// The largest error found (NaN when the comparison met a NaN); for the
    /// finite-difference comparisons, the error of the element furthest
    /// outside its tolerance.
    pub worst: f64,
    /// The largest error allowed where the worst one was found.
    pub tolerance: f64,
}

impl Finding {
    /// The worst error is within tolerance (false for NaN).
    pub fn passed(&self) -> bool {
        self.worst <= self.tolerance
    }
}

/// Every quantity [`check_energy_model`] measured, in check order.
///
/// A report is returned whether or not the model passes, so that one run
/// shows every failure; [`ModelReport::ensure`] turns failures into an error.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelReport {
    /// One or more findings per [`Check`].
    pub findings: Vec<Finding>,
}

impl ModelReport {
    /// Every finding within tolerance.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(Finding::passed)
    }

    /// The checks with a finding outside tolerance, each once, in check order.
    pub fn failed(&self) -> Vec<Check> {
        let mut failed: Vec<Check> = Vec::new();
        for finding in self.findings.iter().filter(|f| !f.passed()) {
            if !failed.contains(&finding.check) {
                failed.push(finding.check);
            }
        }
        failed
    }

    /// The report itself if every check passed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (argument `energy model`) naming each failed
    /// finding with its worst error and tolerance.
    pub fn ensure(self) -> Result<Self> {
        if self.passed() {
            return Ok(self);
        }
        let failures: Vec<String> = self
            .findings
            .iter()
            .filter(|f| !f.passed())
            .map(|f| {
                format!(
                    "{} ({}): worst {:e}, tolerance {:e}",
                    f.check, f.quantity, f.worst, f.tolerance
                )
            })
            .collect();
        Err(Error::InvalidArgument {
            arg: "energy model",
            reason: format!("failed the model check: {}", failures.join("; ")),
        })
    }
}

impl fmt::Display for ModelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(
                f,
                "{:<15} {:<52} worst {:.3e}  tolerance {:.3e}  {}",
                finding.check.name(),
                finding.quantity,
                finding.worst,
                finding.tolerance,
                if finding.passed() { "ok" } else { "FAILED" }
            )?;
        }
        Ok(())
    }
}

/// Checks a user's energy model the way NequIP's `model_tests_basic.py` checks
/// its own: symmetries, batching, forces and second derivatives (see [`Check`]).
///
/// `model` maps a batch to molecule energies `[B]` (eV) and must be
/// re-evaluable on any batch: the check calls it on rotated, shifted,
/// permuted, re-ordered and single-molecule batches built from `batch`, with
/// species and bonds moved with the atoms (bonds, if `batch` has them, are
/// renumbered). Positions are given as they should be differentiated, so the
/// model must compute from `batch.pos()` (not from a copy or a detached
/// tensor) with autograd enabled.
///
/// `batch` needs at least two molecules, ideally of different sizes with their
/// atoms interleaved, so that batching mistakes show. Cost: about
/// `4 * 3N` model evaluations for the finite differences (half of them with a
/// double backward), `B` backward passes and `B` single-molecule evaluations.
///
/// # Dtype
/// f64 only: `batch.pos()` must be f64 and the model must return f64 (cast a
/// model's parameters with `VarStore::set_kind(Kind::Double)` first). Finite
/// differences and the default tolerances need f64's precision. Any device.
///
/// # Errors
/// [`Error::Dtype`] unless `batch.pos()` is f64; [`Error::InvalidArgument`]
/// for fewer than two molecules or zero `segment_directions`;
/// [`Error::NonPositive`] for a `segment` that is not positive; errors of the model; [`Error::Shape`],
/// [`Error::Dtype`] or [`Error::NonFinite`] for a model output that is not
/// finite f64 `[B]`; [`Error::NoGraph`] when the energy has no graph back to
/// the positions. A model that runs but fails a check is not an error: see
/// [`ModelReport::ensure`].
///
/// # Example
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::testing::{check_energy_model, ModelCheck, PairEnergy, PairPotential};
/// use physcon::{EnergyModel, MolBatch, Molecule};
/// use tch::{Device, Kind};
///
/// let water = Molecule {
///     species: vec![8, 1, 1],
///     pos: vec![[0.0, 0.0, 0.1], [0.76, 0.0, -0.5], [-0.77, 0.1, -0.45]],
///     bonds: vec![(0, 1, 1), (0, 2, 1)],
/// };
/// let h2 = Molecule { species: vec![1, 1], pos: vec![[2.0, 1.0, 0.0], [2.1, 1.2, 0.72]], bonds: vec![(0, 1, 1)] };
/// let batch = MolBatch::from_molecules(&[water, h2], Kind::Double, Device::Cpu)?;
/// // The model under test: anything that maps a batch to molecule energies [B].
/// let morse = PairPotential::Morse { d: 4.0, a: 2.0, r0: 1.0 };
/// let model = |b: &MolBatch| PairEnergy::new(morse, b.layout())?.energy(b.pos());
/// let report = check_energy_model(&model, &batch, &ModelCheck::default())?.ensure()?;
/// println!("{report}");
/// # Ok(()) }
/// ```
pub fn check_energy_model<F>(model: &F, batch: &MolBatch, options: &ModelCheck) -> Result<ModelReport>
where
    F: Fn(&MolBatch) -> Result<Tensor> + ?Sized,
{
    let kind = batch.pos().f_kind()?;
    if kind != Kind::Double {
        return Err(Error::Dtype {
            arg: "batch pos",
            expected: "Double (finite differences and the tolerances need f64)".into(),
            got: kind,
        });
    }
    if batch.num_molecules() < 2 {
        return Err(Error::InvalidArgument {
            arg: "batch",
            reason: "the batching checks need at least two molecules".into(),
        });
    }
    check::positive("segment", options.segment)?;
    if options.segment_directions == 0 {
        return Err(Error::InvalidArgument {
            arg: "segment_directions",
            reason: "at least one direction is needed".into(),
        });
    }

    let host = Host::of(batch)?;
    let reference = Outputs::of(model, batch)?;
    let mut findings = Vec::new();

    for (check, moved, expected) in symmetry_cases(batch, &host, &reference, options)? {
        let got = Outputs::of(model, &moved)?;
        findings.extend(expected.compare(check, &got, SYMMETRY, options.symmetry)?);
    }
    findings.extend(isolation(model, batch, &host, &reference, options)?);

    let total =
        |xs: &[Tensor]| -> Result<Tensor> { Ok(model(&batch.with_pos(&xs[0])?)?.f_sum(Kind::Double)?) };
    let inputs = [batch.pos().detach()];
    let forces = gradcheck(total, &inputs, options.forces)?;
    findings.push(gradcheck_finding(
        Check::Forces,
        "dE/dR vs central differences (eV/Å)",
        &forces,
        options.forces,
    ));
    let hessian = gradgradcheck(total, &inputs, options.hessian)?;
    findings.push(gradcheck_finding(
        Check::SecondOrder,
        "Hessian-vector products vs central differences",
        &hessian,
        options.hessian,
    ));
    findings.push(segments(&total, batch.pos(), options)?);
    Ok(ModelReport { findings })
}

/// The transformed batches of the symmetry checks, each with the outputs
/// the model must give on it (the reference outputs transformed alike).
fn symmetry_cases(
    batch: &MolBatch,
    host: &Host,
    reference: &Outputs,
    options: &ModelCheck,
) -> Result<Vec<(Check, MolBatch, Outputs)>> {
    let device = batch.layout().device();
    let rot_t = rotation(options.rotation)?.f_to_device(device)?.f_tr()?;
    let rotated = Outputs {
        energy: reference.energy.shallow_clone(),
        forces: reference.forces.f_matmul(&rot_t)?,
    };
    let shift = Tensor::from_slice(&options.translation).f_to_device(device)?;
    let shifted = Outputs {
        energy: reference.energy.shallow_clone(),
        forces: reference.forces.shallow_clone(),
    };

    // Every molecule's atoms move one place on through the slots the molecule owns.
    let mut cycled = vec![0i64; host.batch.len()];
    for atoms in &host.members {
        for (k, &slot) in atoms.iter().enumerate() {
            cycled[slot as usize] = atoms[(k + 1) % atoms.len()];
        }
    }
    let same: Vec<i64> = (0..batch.num_molecules()).collect();

    // Molecules in reverse order, each one's atoms contiguous and in their own order.
    let reversed_atoms: Vec<i64> = host.members.iter().rev().flatten().copied().collect();
    let reversed: Vec<i64> = same.iter().rev().copied().collect();

    Ok(vec![
        (
            Check::Rotation,
            batch.with_pos(&batch.pos().f_matmul(&rot_t)?)?,
            rotated,
        ),
        (
            Check::Translation,
            batch.with_pos(&batch.pos().f_add(&shift)?)?,
            shifted,
        ),
        (
            Check::Permutation,
            host.select(batch, &cycled, &same)?,
            reference.reorder(&cycled, None)?,
        ),
        (
            Check::MoleculeOrder,
            host.select(batch, &reversed_atoms, &reversed)?,
            reference.reorder(&reversed_atoms, Some(&reversed))?,
        ),
    ])
}

/// What the symmetry checks compare.
const SYMMETRY: [&str; 2] = ["energy (eV)", "forces (eV/Å)"];

/// The batch's molecule membership and bonds on the host, for building
/// re-ordered batches.
struct Host {
    batch: Vec<i64>,
    /// The atoms of each molecule, in batch order.
    members: Vec<Vec<i64>>,
    bonds: Option<(Vec<i64>, Vec<i64>)>,
}

impl Host {
    fn of(batch: &MolBatch) -> Result<Self> {
        let vector = Vec::<i64>::try_from(&batch.layout().batch().f_to_device(Device::Cpu)?)?;
        let mut members = vec![Vec::new(); batch.num_molecules() as usize];
        for (atom, &m) in vector.iter().enumerate() {
            members[m as usize].push(atom as i64);
        }
        let bonds = match batch.bonds() {
            Some(bonds) => Some((
                Vec::<i64>::try_from(&bonds.index().f_to_device(Device::Cpu)?.f_reshape([-1])?)?,
                Vec::<i64>::try_from(&bonds.order().f_to_device(Device::Cpu)?)?,
            )),
            None => None,
        };
        Ok(Self {
            batch: vector,
            members,
            bonds,
        })
    }

    /// A batch of the atoms `order` of `batch` (new atom `k` is old atom
    /// `order[k]`), old molecule `m` renamed `relabel[m]`. `order` must hold
    /// whole molecules; bonds among them follow their atoms.
    fn select(&self, batch: &MolBatch, order: &[i64], relabel: &[i64]) -> Result<MolBatch> {
        let device = batch.layout().device();
        let index = Tensor::from_slice(order).f_to_device(device)?;
        let molecules: Vec<i64> = order
            .iter()
            .map(|&a| relabel[self.batch[a as usize] as usize])
            .collect();
        let count = molecules.iter().copied().max().map_or(0, |m| m + 1);
        let selected = MolBatch::new(
            &batch.pos().f_index_select(0, &index)?,
            &batch.species().f_index_select(0, &index)?,
            &Tensor::from_slice(&molecules).f_to_device(device)?,
            count,
        )?;
        let Some((pairs, orders)) = &self.bonds else {
            return Ok(selected);
        };
        let mut new_index = vec![-1i64; self.batch.len()];
        for (k, &old) in order.iter().enumerate() {
            new_index[old as usize] = k as i64;
        }
        let (mut kept_pairs, mut kept_orders) = (Vec::new(), Vec::new());
        for (pair, &bond_order) in pairs.chunks(2).zip(orders) {
            // Bonds never join two molecules, so one end tells whether the bond is kept.
            if new_index[pair[0] as usize] >= 0 {
                kept_pairs.extend([new_index[pair[0] as usize], new_index[pair[1] as usize]]);
                kept_orders.push(bond_order);
            }
        }
        let e = kept_orders.len() as i64;
        selected.with_bonds(
            &Tensor::from_slice(&kept_pairs)
                .f_reshape([e, 2])?
                .f_to_device(device)?,
            &Tensor::from_slice(&kept_orders).f_to_device(device)?,
        )
    }
}

/// A model's energies `[B]` and forces `[N, 3]` on one batch, without graphs.
struct Outputs {
    energy: Tensor,
    forces: Tensor,
}

impl Outputs {
    fn of<F>(model: &F, batch: &MolBatch) -> Result<Self>
    where
        F: Fn(&MolBatch) -> Result<Tensor> + ?Sized,
    {
        let surface = |pos: &Tensor| model(&batch.with_pos(pos)?);
        let out = energy_and_forces(&surface, batch.pos(), batch.layout(), false)?;
        Ok(Self {
            energy: out.energy.detach(),
            forces: out.forces,
        })
    }

    /// What these outputs become when the atoms are re-ordered by `order`
    /// and, if given, molecule `m` is renamed `relabel[m]`.
    fn reorder(&self, order: &[i64], relabel: Option<&[i64]>) -> Result<Self> {
        let device = self.forces.device();
        let energy = match relabel {
            Some(relabel) => {
                let mut inverse = vec![0i64; relabel.len()];
                for (old, &new) in relabel.iter().enumerate() {
                    inverse[new as usize] = old as i64;
                }
                let inverse = Tensor::from_slice(&inverse).f_to_device(device)?;
                self.energy.f_index_select(0, &inverse)?
            }
            None => self.energy.shallow_clone(),
        };
        let order = Tensor::from_slice(order).f_to_device(device)?;
        Ok(Self {
            energy,
            forces: self.forces.f_index_select(0, &order)?,
        })
    }

    /// Findings of `check`: `got` against these expected outputs, named
    /// `quantities` (energy, forces).
    fn compare(
        &self,
        check: Check,
        got: &Self,
        quantities: [&'static str; 2],
        tolerance: Tolerance,
    ) -> Result<[Finding; 2]> {
        Ok([
            difference(check, quantities[0], &got.energy, &self.energy, tolerance)?,
            difference(check, quantities[1], &got.forces, &self.forces, tolerance)?,
        ])
    }
}

/// The largest `|got - want|` against `tolerance` scaled by the largest `|want|`.
fn difference(
    check: Check,
    quantity: &'static str,
    got: &Tensor,
    want: &Tensor,
    tolerance: Tolerance,
) -> Result<Finding> {
    let worst = got.f_sub(want)?.f_abs()?.f_max()?.f_double_value(&[])?;
    let scale = want.f_abs()?.f_max()?.f_double_value(&[])?;
    Ok(Finding {
        check,
        quantity,
        worst,
        tolerance: tolerance.bound(scale),
    })
}

/// The worst element of a gradient check as a finding: its error and its own tolerance.
fn gradcheck_finding(
    check: Check,
    quantity: &'static str,
    report: &GradcheckReport,
    options: GradcheckOptions,
) -> Finding {
    let (worst, tolerance) = report.worst.map_or((0.0, options.atol), |w| {
        (
            (w.analytic - w.numeric).abs(),
            options.atol + options.rtol * w.numeric.abs(),
        )
    });
    Finding {
        check,
        quantity,
        worst,
        tolerance,
    }
}

/// Isolation: single-molecule evaluations against the batch's, and the
/// gradient of each molecule's energy outside the molecule.
fn isolation<F>(
    model: &F,
    batch: &MolBatch,
    host: &Host,
    reference: &Outputs,
    options: &ModelCheck,
) -> Result<[Finding; 3]>
where
    F: Fn(&MolBatch) -> Result<Tensor> + ?Sized,
{
    let b = batch.num_molecules();
    let (mut energies, mut forces) = (Vec::new(), Vec::new());
    for (m, atoms) in host.members.iter().enumerate() {
        let mut relabel = vec![-1i64; b as usize];
        relabel[m] = 0;
        let alone = Outputs::of(model, &host.select(batch, atoms, &relabel)?)?;
        energies.push(alone.energy);
        forces.push(alone.forces);
    }
    let order: Vec<i64> = host.members.iter().flatten().copied().collect();
    let alone = Outputs {
        energy: Tensor::f_cat(&energies, 0)?,
        forces: Tensor::f_cat(&forces, 0)?,
    };
    let [energy, force] = reference.reorder(&order, None)?.compare(
        Check::Isolation,
        &alone,
        [
            "energy of each molecule alone (eV)",
            "forces of each molecule alone (eV/Å)",
        ],
        options.symmetry,
    )?;

    let leaf = leaf_copy(batch.pos());
    let surface = |pos: &Tensor| model(&batch.with_pos(pos)?);
    let mut finite = check::Finite::full();
    let energy_of = evaluate(&surface, &leaf, batch.layout(), &mut finite)?;
    finite.finish()?;
    let mut leak = 0.0f64;
    for m in 0..b {
        // The forward's graph serves every molecule's backward.
        let grad = grad_or_zeros(&energy_of.f_select(0, m)?, &leaf, Backward::KeepForward)?;
        let outside = batch.layout().batch().f_ne(m)?.f_unsqueeze(1)?;
        let largest = grad.f_mul(&outside)?.f_abs()?.f_max()?.f_double_value(&[])?;
        leak = if largest.is_nan() {
            f64::NAN
        } else {
            leak.max(largest)
        };
    }
    Ok([
        energy,
        force,
        Finding {
            check: Check::Isolation,
            quantity: "dE_b/dR_i for atoms i outside molecule b (eV/Å)",
            worst: leak,
            tolerance: options.leak,
        },
    ])
}

/// The integrated-Hessian check: along fixed directions `v`, the gradient
/// change `g(x + h v) - g(x - h v)` against Simpson's rule for
/// `integral_{-h}^{h} H(x + t v) v dt`. Autograd's Hessian of a ReLU model
/// misses the jumps of the gradient at the kinks, which a segment crossing
/// one exposes; a smooth model agrees to `O(h^5)`.
fn segments<F>(total: &F, pos: &Tensor, options: &ModelCheck) -> Result<Finding>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let h = options.segment;
    let n = pos.numel() as i64;
    let (mut changes, mut integrals) = (Vec::new(), Vec::new());
    for d in 0..options.segment_directions {
        let raw = Tensor::f_arange(n, (Kind::Double, pos.device()))?
            .f_add_scalar(1.0)?
            .f_mul_scalar(0.7 + d as f64)?
            .f_sin()?
            .f_reshape(pos.size())?;
        let largest = raw
            .f_square()?
            .f_sum_dim_intlist(1, false, Kind::Double)?
            .f_max()?
            .f_sqrt()?;
        let v = raw.f_div(&largest)?;
        let mut at = Vec::new();
        for t in [-h, 0.0, h] {
            at.push(gradient_and_hvp(total, &pos.f_add(&v.f_mul_scalar(t)?)?, &v)?);
        }
        changes.push(at[2].0.f_sub(&at[0].0)?);
        let weighted = at[0].1.f_add(&at[1].1.f_mul_scalar(4.0)?)?.f_add(&at[2].1)?;
        integrals.push(weighted.f_mul_scalar(h / 3.0)?);
    }
    difference(
        Check::SecondOrder,
        "gradient change across segments vs integrated HVP",
        &Tensor::f_cat(&integrals, 0)?,
        &Tensor::f_cat(&changes, 0)?,
        options.segment_tolerance,
    )
}

/// The gradient of `total` at `x` and the Hessian-vector product `H v` there.
fn gradient_and_hvp<F>(total: &F, x: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let leaf = leaf_copy(x);
    let energy = total(std::slice::from_ref(&leaf))?;
    let grad = grad_or_zeros(&energy, &leaf, Backward::CreateGraph)?;
    let hvp = grad_or_zeros(&grad.f_mul(v)?.f_sum(Kind::Double)?, &leaf, Backward::Free)?;
    Ok((grad.detach(), hvp))
}
