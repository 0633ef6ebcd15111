use std::ops::RangeInclusive;

use tch::{Device, Kind, Tensor};

use crate::batch::BatchLayout;
use crate::check;
use crate::error::{Error, Result};

/// The shape of a variance-preserving noise schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleKind {
    /// Nichol & Dhariwal (2021): `abar(t) = f(t)/f(0)`, `f(t) = cos²((t/T + s)/(1 + s) π/2)`,
    /// each `beta_t` clipped at 0.999.
    Cosine {
        /// The small offset `s` (0.008 in the paper).
        s: f64,
    },
    /// Ho et al. (2020): `beta_t` linear from `beta_start` to `beta_end`.
    Linear {
        /// `beta_1`.
        beta_start: f64,
        /// `beta_T`.
        beta_end: f64,
    },
}

/// A variance-preserving schedule: `R_t = a_t R_0 + s_t eps`, `a_t = sqrt(abar_t)`,
/// `s_t = sqrt(1 - abar_t)`, for `t` in `1..=T`, with `abar_0 = 1`.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// let schedule = physcon::diffusion::NoiseSchedule::cosine(1000)?;
/// assert_eq!(schedule.steps(), 1000);
/// assert!(schedule.alpha_bar(1)? > 0.9999 && schedule.alpha_bar(1000)? < 1e-4);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    kind: ScheduleKind,
    alpha_bar: Vec<f64>,
}

impl NoiseSchedule {
    /// The cosine schedule with `s = 0.008` over `steps` steps (the default; T = 1000 is usual).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `steps < 1`.
    pub fn cosine(steps: i64) -> Result<Self> {
        Self::new(ScheduleKind::Cosine { s: 0.008 }, steps)
    }

    /// The linear-beta schedule (DDPM uses `1e-4..=0.02` over 1000 steps).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `steps < 1` or betas outside `(0, 1)` or decreasing.
    pub fn linear(steps: i64, beta_start: f64, beta_end: f64) -> Result<Self> {
        Self::new(ScheduleKind::Linear { beta_start, beta_end }, steps)
    }

    /// A schedule of the given kind.
    ///
    /// # Errors
    /// As [`NoiseSchedule::cosine`] and [`NoiseSchedule::linear`]; a negative or
    /// non-finite cosine offset.
    pub fn new(kind: ScheduleKind, steps: i64) -> Result<Self> {
        if steps < 1 {
            return Err(Error::InvalidArgument {
                arg: "steps",
                reason: format!("must be at least 1, got {steps}"),
            });
        }
        let n = steps as usize;
        let betas: Vec<f64> = match kind {
            ScheduleKind::Cosine { s } => {
                if !(s.is_finite() && s >= 0.0) {
                    return Err(Error::InvalidArgument {
                        arg: "s",
                        reason: format!("must be finite and >= 0, got {s}"),
                    });
                }
                let f = |t: usize| {
                    let x = (t as f64 / n as f64 + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2;
                    x.cos().powi(2)
                };
                (1..=n)
                    .map(|t| (1.0 - f(t) / f(t - 1)).clamp(0.0, 0.999))
                    .collect()
            }
            ScheduleKind::Linear { beta_start, beta_end } => {
                let ok = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
                if !(ok(beta_start) && ok(beta_end) && beta_start <= beta_end) {
                    return Err(Error::InvalidArgument {
                        arg: "beta",
                        reason: format!("need 0 < beta_start <= beta_end < 1, got {beta_start}..{beta_end}"),
                    });
                }
                (0..n)
                    .map(|k| {
                        let w = if n == 1 { 0.0 } else { k as f64 / (n - 1) as f64 };
                        beta_start + w * (beta_end - beta_start)
                    })
                    .collect()
            }
        };
        let mut alpha_bar = Vec::with_capacity(n + 1);
        alpha_bar.push(1.0);
        for beta in betas {
            let last = *alpha_bar.last().unwrap_or(&1.0);
            alpha_bar.push(last * (1.0 - beta));
        }
        Ok(Self { kind, alpha_bar })
    }

    /// The schedule's kind.
    pub fn kind(&self) -> ScheduleKind {
        self.kind
    }

    /// The number of steps T.
    pub fn steps(&self) -> i64 {
        (self.alpha_bar.len() - 1) as i64
    }

    /// `abar_t` for `t` in `0..=T` (`abar_0 = 1`).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for `t` outside `0..=T`.
    pub fn alpha_bar(&self, t: i64) -> Result<f64> {
        usize::try_from(t)
            .ok()
            .and_then(|t| self.alpha_bar.get(t).copied())
            .ok_or(Error::IndexOutOfRange {
                arg: "t",
                index: t,
                bound: self.steps() + 1,
            })
    }

    /// `a_t = sqrt(abar_t)`, the signal scale.
    ///
    /// # Errors
    /// As [`NoiseSchedule::alpha_bar`].
    pub fn alpha(&self, t: i64) -> Result<f64> {
        Ok(self.alpha_bar(t)?.sqrt())
    }

    /// `s_t = sqrt(1 - abar_t)`, the noise scale.
    ///
    /// # Errors
    /// As [`NoiseSchedule::alpha_bar`].
    pub fn sigma(&self, t: i64) -> Result<f64> {
        Ok((1.0 - self.alpha_bar(t)?).sqrt())
    }

    /// The noise level of each molecule at its step `t: [B]` (i64 in `1..=T`), as `kind` on `t`'s device.
    ///
    /// # Errors
    /// [`Error::Dtype`] unless `t` is i64 and `kind` a float kind, [`Error::Shape`]
    /// unless 1-D, [`Error::IndexOutOfRange`] for a step outside `1..=T`.
    pub fn level(&self, t: &Tensor, kind: Kind) -> Result<NoiseLevel> {
        check::int64("t", t)?;
        check::float_kind("kind", kind)?;
        one_per_molecule("t", t)?;
        check::values_in("t", t, 1, self.steps() + 1)?;
        let table = Tensor::from_slice(&self.alpha_bar).f_to_device(t.device())?;
        let abar = table.f_index_select(0, t)?;
        Ok(NoiseLevel {
            t: Some(t.shallow_clone()),
            alpha: abar.f_sqrt()?.f_to_kind(kind)?,
            sigma: abar.f_neg()?.f_add_scalar(1.0)?.f_sqrt()?.f_to_kind(kind)?,
        })
    }

    /// `n` steps drawn uniformly from `range` (within `1..=T`), i64 on `device`,
    /// from libtorch's global generator (`tch::manual_seed`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty range or one outside `1..=T`, or `n < 1`.
    pub fn sample_t(&self, n: i64, range: RangeInclusive<i64>, device: Device) -> Result<Tensor> {
        let (lo, hi) = (*range.start(), *range.end());
        if n < 1 || lo < 1 || hi > self.steps() || lo > hi {
            return Err(Error::InvalidArgument {
                arg: "range",
                reason: format!("need n >= 1 and 1 <= {lo} <= {hi} <= {}, n = {n}", self.steps()),
            });
        }
        Ok(Tensor::f_randint_low(lo, hi + 1, [n], (Kind::Int64, device))?)
    }
}

/// A non-empty `[B]` tensor: one value per molecule of a batch.
fn one_per_molecule(arg: &'static str, t: &Tensor) -> Result<()> {
    if t.dim() == 1 && t.size()[0] > 0 {
        Ok(())
    } else {
        Err(Error::Shape {
            arg,
            expected: "[B] with B >= 1".into(),
            got: t.size(),
        })
    }
}

/// The noise level of each molecule: signal scale `a: [B]` and noise scale `s: [B]`
/// of `R_t = a R_0 + s eps`, and the step `t: [B]` when a [`NoiseSchedule`] made it.
///
/// Made by [`NoiseSchedule::level`] for physcon's own diffusion, or from the
/// user's own noising: [`NoiseLevel::new`] for any positive `(a, s)`,
/// [`NoiseLevel::sigma_only`] for a variance-exploding (EDM-style)
/// `R_sigma = R_0 + sigma eps`, which is `a = 1`.
///
/// Nothing assumes `a² + s² = 1`: every use is written for the general
/// `R_t = a R_0 + s eps` (the score target is `eps* = -(s/a) F/kT`, the clean
/// estimate `x0 = (R_t - s eps_hat)/a`), so variance-preserving,
/// variance-exploding and any other scaling of the user's own diffusion are
/// all exact.
#[derive(Debug)]
pub struct NoiseLevel {
    t: Option<Tensor>,
    alpha: Tensor,
    sigma: Tensor,
}

impl Clone for NoiseLevel {
    fn clone(&self) -> Self {
        Self {
            t: self.t.as_ref().map(Tensor::shallow_clone),
            alpha: self.alpha.shallow_clone(),
            sigma: self.sigma.shallow_clone(),
        }
    }
}

impl NoiseLevel {
    /// The level `R_t = alpha R_0 + sigma eps` of a user's own diffusion, per
    /// molecule, for any positive `alpha` and `sigma` (`alpha² + sigma² = 1` is
    /// not required: see [`NoiseLevel`]).
    ///
    /// ```
    /// # fn main() -> physcon::Result<()> {
    /// use physcon::diffusion::NoiseLevel;
    /// use tch::Tensor;
    /// // A variance-preserving level of one's own: a = cos(u), s = sin(u).
    /// let u = Tensor::from_slice(&[0.01f64, 0.05]);
    /// let level = NoiseLevel::new(&u.cos(), &u.sin())?;
    /// assert!(level.t().is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// # Shapes
    /// `alpha`, `sigma`: `[B]`, one float dtype and device (that of the coordinates they scale).
    ///
    /// # Errors
    /// [`Error::Dtype`], [`Error::Shape`], [`Error::Device`] for `alpha` or `sigma`;
    /// [`Error::InvalidArgument`] unless every value is positive and finite (one host read).
    pub fn new(alpha: &Tensor, sigma: &Tensor) -> Result<Self> {
        check::float("alpha", alpha)?;
        one_per_molecule("alpha", alpha)?;
        check::float("sigma", sigma)?;
        check::same_kind("sigma", sigma, alpha.kind())?;
        check::shape("sigma", sigma, &alpha.size(), "[B], as alpha")?;
        check::on_device("sigma", sigma, alpha.device())?;
        let (alpha, sigma) = (alpha.detach(), sigma.detach());
        let stats = check::host_scalars(&[alpha.f_min()?, sigma.f_min()?, alpha.f_max()?, sigma.f_max()?])?;
        for (arg, low, high) in [("alpha", stats[0], stats[2]), ("sigma", stats[1], stats[3])] {
            if !(low > 0.0 && high.is_finite()) {
                return Err(Error::InvalidArgument {
                    arg,
                    reason: format!("every value must be positive and finite (range {low} to {high})"),
                });
            }
        }
        Ok(Self {
            t: None,
            alpha,
            sigma,
        })
    }

    /// The level `R_sigma = R_0 + sigma eps` of a variance-exploding (sigma-only,
    /// EDM-style) diffusion: [`NoiseLevel::new`] with `alpha = 1`.
    ///
    /// # Errors
    /// As [`NoiseLevel::new`], for `sigma`.
    pub fn sigma_only(sigma: &Tensor) -> Result<Self> {
        check::float("sigma", sigma)?;
        Self::new(&sigma.f_ones_like()?, sigma)
    }

    /// Steps `[B]` (i64), when a [`NoiseSchedule`] made the level.
    pub fn t(&self) -> Option<&Tensor> {
        self.t.as_ref()
    }

    /// Signal scales `a_t: [B]`.
    pub fn alpha(&self) -> &Tensor {
        &self.alpha
    }

    /// Noise scales `s_t: [B]`.
    pub fn sigma(&self) -> &Tensor {
        &self.sigma
    }

    /// `a_t` per atom, `[N, 1]`, to broadcast against `[N, 3]`.
    pub(crate) fn alpha_atoms(&self, layout: &BatchLayout) -> Result<Tensor> {
        Ok(layout.expand_unchecked(&self.alpha)?.f_unsqueeze(1)?)
    }

    /// `s_t` per atom, `[N, 1]`.
    pub(crate) fn sigma_atoms(&self, layout: &BatchLayout) -> Result<Tensor> {
        Ok(layout.expand_unchecked(&self.sigma)?.f_unsqueeze(1)?)
    }

    /// The level fits the layout and the dtype of the coordinates it scales.
    ///
    /// Metadata only: the values were checked when the level was made.
    pub(crate) fn check(&self, layout: &BatchLayout, kind: Kind) -> Result<()> {
        for (arg, t) in [("level.alpha", &self.alpha), ("level.sigma", &self.sigma)] {
            check::float_meta(arg, t, layout, &[layout.num_molecules()], "[B]")?;
            check::same_kind(arg, t, kind)?;
        }
        Ok(())
    }
}
