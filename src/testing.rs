//! Test tools for physcon and for users' own models: finite-difference
//! gradient checks of first and second order, analytic pair potentials with
//! closed-form derivatives, and [`check_energy_model`], which runs NequIP's
//! model checks (symmetries, batching, forces, second order) on a user's
//! energy model.
//!
//! ```
//! # fn main() -> physcon::Result<()> {
//! use physcon::testing::{gradcheck, GradcheckOptions};
//! use tch::{Kind, Tensor};
//! let x = Tensor::from_slice(&[0.3f64, -1.2, 2.0]);
//! let cube = |xs: &[Tensor]| -> physcon::Result<Tensor> { Ok(xs[0].pow_tensor_scalar(3).sum(Kind::Double)) };
//! let report = gradcheck(cube, &[x], GradcheckOptions::default())?;
//! assert!(report.passed(), "{report}");
//! # Ok(()) }
//! ```

use std::fmt;

use tch::{Kind, Tensor};

use crate::batch::BatchLayout;
use crate::energy::{grads_or_zeros, Backward, EnergyModel};
use crate::error::{Error, Result};
use crate::geometry::{pairs_within, safe_norm};

mod model_check;

pub use model_check::{check_energy_model, Check, Finding, ModelCheck, ModelReport, Tolerance};

/// Serialises tests that seed and draw from libtorch's global generator
/// (`tch::manual_seed`, [`crate::diffusion::q_sample`], the samplers): hold the
/// guard for the rest of the test.
///
/// The generator is process-wide and cargo runs tests in parallel threads, so
/// without it two seeded tests interleave their draws. A test that failed
/// while holding the guard does not poison it.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tolerances of [`gradcheck`]; the defaults are `torch.autograd.gradcheck`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradcheckOptions {
    /// Central-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the numerical value).
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        Self {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// The worst element of a gradient check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mismatch {
    /// Which input.
    pub input: usize,
    /// Which element of it (flat index).
    pub element: usize,
    /// The autograd value.
    pub analytic: f64,
    /// The central-difference value.
    pub numeric: f64,
}

/// What a gradient check found.
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckReport {
    /// The element with the largest `|analytic - numeric| - rtol |numeric|`.
    pub worst: Option<Mismatch>,
    /// Elements outside `atol + rtol |numeric|`.
    pub failures: usize,
    /// Elements checked.
    pub checked: usize,
}

impl GradcheckReport {
    /// Every element within tolerance.
    pub fn passed(&self) -> bool {
        self.failures == 0
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} elements outside tolerance",
            self.failures, self.checked
        )?;
        if let Some(w) = self.worst {
            write!(
                f,
                "; worst: input {} element {}: autograd {:e}, finite difference {:e}",
                w.input, w.element, w.analytic, w.numeric
            )?;
        }
        Ok(())
    }
}

/// Compares autograd's gradient of a scalar function with central finite differences.
///
/// `f` receives copies of `inputs` (f64 tensors) and returns a scalar; every
/// element of every input is perturbed by `±eps`. Cost: `2 * numel` calls of `f`.
///
/// # Errors
/// [`Error::Dtype`] unless every input is f64; [`Error::Shape`] unless `f`
/// returns a scalar; [`Error::NonFinite`] for a non-finite output; errors of `f`.
pub fn gradcheck<F>(f: F, inputs: &[Tensor], options: GradcheckOptions) -> Result<GradcheckReport>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    for input in inputs {
        let kind = input.f_kind()?;
        if kind != Kind::Double {
            return Err(Error::Dtype {
                arg: "inputs",
                expected: "Double (finite differences need f64)".into(),
                got: kind,
            });
        }
    }
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|x| x.detach().copy().set_requires_grad(true))
        .collect();
    let out = scalar_output(&f, &leaves)?;
    let analytic: Vec<Vec<f64>> = grads_or_zeros(&out, &leaves, Backward::Free)?
        .iter()
        .map(|g| Ok(Vec::<f64>::try_from(g.f_reshape([-1])?)?))
        .collect::<Result<_>>()?;
    let mut report = GradcheckReport {
        worst: None,
        failures: 0,
        checked: 0,
    };
    let mut worst_excess = f64::NEG_INFINITY;
    let base: Vec<Tensor> = inputs.iter().map(|x| x.detach().copy()).collect();
    for (k, input) in base.iter().enumerate() {
        let flat = Vec::<f64>::try_from(input.f_reshape([-1])?)?;
        for (e, &x) in flat.iter().enumerate() {
            let eval = |value: f64| -> Result<f64> {
                let mut moved = flat.clone();
                moved[e] = value;
                let mut args: Vec<Tensor> = base.iter().map(Tensor::shallow_clone).collect();
                args[k] = Tensor::from_slice(&moved)
                    .f_reshape(input.size())?
                    .f_to_device(input.device())?;
                Ok(scalar_output(&f, &args)?.f_double_value(&[])?)
            };
            let numeric = (eval(x + options.eps)? - eval(x - options.eps)?) / (2.0 * options.eps);
            let a = analytic[k][e];
            let excess = (a - numeric).abs() - options.rtol * numeric.abs();
            report.checked += 1;
            if excess > options.atol || !a.is_finite() {
                report.failures += 1;
            }
            if excess > worst_excess || !a.is_finite() {
                worst_excess = if a.is_finite() { excess } else { f64::INFINITY };
                report.worst = Some(Mismatch {
                    input: k,
                    element: e,
                    analytic: a,
                    numeric,
                });
            }
        }
    }
    Ok(report)
}

/// Second-order check: [`gradcheck`] of `sum_k <grad_k f, w_k>` for fixed
/// weights `w_k`, which exercises every Hessian-vector product autograd
/// builds for `f` (what a double-backward loss relies on).
///
/// # Errors
/// As [`gradcheck`].
pub fn gradgradcheck<F>(f: F, inputs: &[Tensor], options: GradcheckOptions) -> Result<GradcheckReport>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let weights: Vec<Tensor> = inputs
        .iter()
        .map(|x| {
            let n = x.numel() as i64;
            Ok(Tensor::f_arange(n, (Kind::Double, x.device()))?
                .f_add_scalar(1.0)?
                .f_sin()?
                .f_reshape(x.size())?)
        })
        .collect::<Result<_>>()?;
    let directional = |xs: &[Tensor]| -> Result<Tensor> {
        let leaves: Vec<Tensor> = xs
            .iter()
            .map(|x| {
                if x.requires_grad() {
                    x.shallow_clone()
                } else {
                    x.detach().set_requires_grad(true)
                }
            })
            .collect();
        let out = scalar_output(&f, &leaves)?;
        let mut total = Tensor::f_zeros([], (Kind::Double, out.device()))?;
        for (g, w) in grads_or_zeros(&out, &leaves, Backward::CreateGraph)?
            .iter()
            .zip(&weights)
        {
            total = total.f_add(&g.f_mul(w)?.f_sum(Kind::Double)?)?;
        }
        Ok(total)
    };
    gradcheck(directional, inputs, options)
}

fn scalar_output<F>(f: &F, args: &[Tensor]) -> Result<Tensor>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let out = f(args)?;
    if out.dim() != 0 {
        return Err(Error::Shape {
            arg: "f output",
            expected: "a scalar []".into(),
            got: out.size(),
        });
    }
    crate::check::finite("f output", &out)?;
    Ok(out)
}

/// The proper rotation matrix `[3, 3]` (f64) of a quaternion `(w, x, y, z)`,
/// normalised first: for invariance and equivariance tests, rotate row
/// vectors with `pos.matmul(&rotation.tr())`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a zero or non-finite quaternion.
pub fn rotation(q: [f64; 4]) -> Result<Tensor> {
    let norm = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(norm.is_finite() && norm > 1e-12) {
        return Err(Error::InvalidArgument {
            arg: "q",
            reason: format!("{q:?} is not a non-zero finite quaternion"),
        });
    }
    let [w, x, y, z] = q.map(|v| v / norm);
    let m = [
        1.0 - 2.0 * (y * y + z * z),
        2.0 * (x * y - z * w),
        2.0 * (x * z + y * w),
        2.0 * (x * y + z * w),
        1.0 - 2.0 * (x * x + z * z),
        2.0 * (y * z - x * w),
        2.0 * (x * z - y * w),
        2.0 * (y * z + x * w),
        1.0 - 2.0 * (x * x + y * y),
    ];
    Ok(Tensor::from_slice(&m).f_reshape([3, 3])?)
}

/// An analytic pair potential `phi(r)` (eV, r in Å) with closed-form derivatives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PairPotential {
    /// `k/2 (r - r0)^2`.
    Harmonic {
        /// Force constant (eV/Å²).
        k: f64,
        /// Rest length (Å).
        r0: f64,
    },
    /// `D (1 - exp(-a (r - r0)))^2`.
    Morse {
        /// Well depth (eV).
        d: f64,
        /// Width (1/Å).
        a: f64,
        /// Equilibrium distance (Å).
        r0: f64,
    },
    /// `4 epsilon ((sigma/r)^12 - (sigma/r)^6)`, minimum at `2^(1/6) sigma`.
    LennardJones {
        /// Well depth (eV).
        epsilon: f64,
        /// Zero crossing (Å).
        sigma: f64,
    },
}

impl PairPotential {
    /// The distance of the minimum (Å).
    pub fn minimum(&self) -> f64 {
        match *self {
            Self::Harmonic { r0, .. } | Self::Morse { r0, .. } => r0,
            Self::LennardJones { sigma, .. } => 2f64.powf(1.0 / 6.0) * sigma,
        }
    }

    /// `phi(r)`, `phi'(r)`, `phi''(r)` in closed form.
    pub fn derivatives(&self, r: f64) -> [f64; 3] {
        match *self {
            Self::Harmonic { k, r0 } => [0.5 * k * (r - r0).powi(2), k * (r - r0), k],
            Self::Morse { d, a, r0 } => {
                let e = (-a * (r - r0)).exp();
                [
                    d * (1.0 - e).powi(2),
                    2.0 * d * a * (1.0 - e) * e,
                    2.0 * d * a * a * e * (2.0 * e - 1.0),
                ]
            }
            Self::LennardJones { epsilon, sigma } => {
                let (s6, s12) = (sigma.powi(6), sigma.powi(12));
                [
                    4.0 * epsilon * (s12 / r.powi(12) - s6 / r.powi(6)),
                    4.0 * epsilon * (-12.0 * s12 / r.powi(13) + 6.0 * s6 / r.powi(7)),
                    4.0 * epsilon * (156.0 * s12 / r.powi(14) - 42.0 * s6 / r.powi(8)),
                ]
            }
        }
    }

    /// `phi(r)` elementwise on a tensor of distances.
    ///
    /// # Errors
    /// libtorch errors only.
    pub fn apply(&self, r: &Tensor) -> Result<Tensor> {
        Ok(match *self {
            Self::Harmonic { k, r0 } => r.f_sub_scalar(r0)?.f_square()?.f_mul_scalar(0.5 * k)?,
            Self::Morse { d, a, r0 } => r
                .f_sub_scalar(r0)?
                .f_mul_scalar(-a)?
                .f_exp()?
                .f_neg()?
                .f_add_scalar(1.0)?
                .f_square()?
                .f_mul_scalar(d)?,
            Self::LennardJones { epsilon, sigma } => {
                let s6 = r.f_reciprocal()?.f_mul_scalar(sigma)?.f_pow_tensor_scalar(6)?;
                s6.f_square()?.f_sub(&s6)?.f_mul_scalar(4.0 * epsilon)?
            }
        })
    }
}

/// The energy `E_b = sum_{i<j in b} phi(|r_i - r_j|)` over all pairs within each molecule.
///
/// Rotation, translation and permutation invariant, smooth (twice
/// differentiable) away from coincident atoms: a reference surface for tests.
#[derive(Debug)]
pub struct PairEnergy {
    potential: PairPotential,
    layout: BatchLayout,
    i: Tensor,
    j: Tensor,
    pair_molecule: Tensor,
}

impl PairEnergy {
    /// The pair energy of `potential` over the molecules of `layout`.
    ///
    /// # Errors
    /// libtorch errors only.
    pub fn new(potential: PairPotential, layout: &BatchLayout) -> Result<Self> {
        let (i, j) = pairs_within(layout)?;
        let pair_molecule = layout.batch().f_index_select(0, &i)?;
        Ok(Self {
            potential,
            layout: layout.clone(),
            i,
            j,
            pair_molecule,
        })
    }
}

impl EnergyModel for PairEnergy {
    fn energy(&self, pos: &Tensor) -> Result<Tensor> {
        crate::check::atoms3("pos", pos, &self.layout)?;
        let diff = pos
            .f_index_select(0, &self.i)?
            .f_sub(&pos.f_index_select(0, &self.j)?)?;
        let phi = self.potential.apply(&safe_norm(&diff)?)?;
        let zeros = Tensor::f_zeros([self.layout.num_molecules()], (pos.kind(), pos.device()))?;
        // Molecules of one atom have no pair: keep them in the graph at zero energy.
        let anchor = pos.f_sum(pos.kind())?.f_mul_scalar(0.0)?;
        Ok(zeros.f_index_add(0, &self.pair_molecule, &phi)?.f_add(&anchor)?)
    }
}
