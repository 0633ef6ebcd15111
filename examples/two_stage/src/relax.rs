//! FIRE relaxation on an energy model: the reference a user would otherwise
//! reach for (relax the cheap structure on the model with ASE's `FIRE`), batched
//! over molecules with every molecule's state of its own.
//!
//! The update is ASE's `FIRE` with its default parameters (time step 0.1,
//! at most 1.0, largest move 0.2 Å per step and molecule, `N_min = 5`,
//! `f_inc = 1.1`, `f_dec = 0.5`, `a_start = 0.1`, `f_a = 0.99`), so the
//! step counts and structures compare with what ASE would give on the same model.

use crate::{Error, Result};
use physcon::{energy_and_forces, BatchLayout, EnergyModel};
use tch::{Kind, Tensor};

/// When a FIRE relaxation stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fire {
    /// A molecule is converged when no atom's force exceeds this (eV/Å).
    pub fmax: f64,
    /// Force evaluations at most (the molecules still moving then are reported).
    pub max_steps: usize,
}

impl Default for Fire {
    /// ASE's usual `fmax = 0.05` eV/Å, at most 1000 steps.
    fn default() -> Self {
        Self {
            fmax: 0.05,
            max_steps: 1000,
        }
    }
}

/// Structures relaxed by [`fire`] and how they got there.
pub struct Relaxed {
    /// Relaxed positions `[N, 3]` (Å), same dtype as the start.
    pub pos: Tensor,
    /// Force evaluations each molecule took (`max_steps` if it did not converge).
    pub steps: Vec<usize>,
    /// Whether each molecule reached `fmax`.
    pub converged: Vec<bool>,
}

const DT_START: f64 = 0.1;
const DT_MAX: f64 = 1.0;
const MAX_MOVE: f64 = 0.2;
const N_MIN: f64 = 5.0;
const F_INC: f64 = 1.1;
const F_DEC: f64 = 0.5;
const A_START: f64 = 0.1;
const F_A: f64 = 0.99;

/// Relaxes `start` (`[N, 3]`, Å) on `model` with FIRE, each molecule until its
/// largest atomic force is below `settings.fmax` or `settings.max_steps` force
/// evaluations have passed. Converged molecules stay where they converged.
///
/// # Errors
/// [`Error::Invalid`] for a non-positive or non-finite `fmax` or zero
/// `max_steps`; those of [`energy_and_forces`] for the model's output.
pub fn fire<E: EnergyModel + ?Sized>(
    model: &E,
    start: &Tensor,
    layout: &BatchLayout,
    settings: &Fire,
) -> Result<Relaxed> {
    if !(settings.fmax.is_finite() && settings.fmax > 0.0) {
        return Err(Error::Flag {
            flag: "--fmax",
            reason: format!("must be positive and finite, got {}", settings.fmax),
        });
    }
    if settings.max_steps == 0 {
        return Err(Error::Flag {
            flag: "--max-steps",
            reason: "must be at least 1".into(),
        });
    }
    let b = layout.num_molecules();
    let opts = (Kind::Double, start.device());
    let atoms = |per_molecule: &Tensor| -> Result<Tensor> {
        Ok(layout.expand(&per_molecule.to_kind(start.kind()))?.unsqueeze(1))
    };
    let mut x = start.detach().copy();
    let mut v = x.zeros_like();
    let mut dt = Tensor::full([b], DT_START, opts);
    let mut a = Tensor::full([b], A_START, opts);
    let mut n_pos = Tensor::zeros([b], opts);
    let mut done = Tensor::zeros([b], (Kind::Bool, start.device()));
    let mut steps = vec![settings.max_steps; b as usize];
    for step in 0..settings.max_steps {
        let f = energy_and_forces(model, &x, layout, false)?.forces.detach();
        let norms = f.square().sum_dim_intlist(1, false, f.kind()).sqrt();
        let above = layout.sum(&norms.ge(settings.fmax).to_kind(f.kind()))?;
        let now = above.eq(0.0).logical_and(&done.logical_not());
        for (k, newly) in Vec::<bool>::try_from(&now)?.into_iter().enumerate() {
            if newly {
                steps[k] = step;
            }
        }
        done = done.logical_or(&now);
        if Vec::<bool>::try_from(&done)?.into_iter().all(|d| d) {
            break;
        }
        let sum = |t: &Tensor| -> Result<Tensor> {
            Ok(layout
                .sum(&t.sum_dim_intlist(1, false, t.kind()))?
                .to_kind(Kind::Double))
        };
        if step > 0 {
            // ASE skips the mixing on its first step (no velocity yet).
            let uphill = sum(&(&f * &v))?.le(0.0);
            let v_norm = sum(&v.square())?.sqrt();
            let f_norm = sum(&f.square())?.sqrt().clamp_min(1e-300);
            let mixed = &v * atoms(&(1.0 - &a))? + &f * atoms(&(&a * &v_norm / &f_norm))?;
            v = mixed.where_self(
                &atoms(&uphill.logical_not())?.to_kind(Kind::Bool),
                &v.zeros_like(),
            );
            let accelerate = n_pos.gt(N_MIN).logical_and(&uphill.logical_not());
            dt = (&dt * F_DEC).where_self(
                &uphill,
                &(&dt * F_INC).clamp_max(DT_MAX).where_self(&accelerate, &dt),
            );
            a = a
                .full_like(A_START)
                .where_self(&uphill, &(&a * F_A).where_self(&accelerate, &a));
            n_pos = n_pos.zeros_like().where_self(&uphill, &(&n_pos + 1.0));
        }
        v = &v + &f * atoms(&dt)?;
        let dr = &v * atoms(&dt)?;
        let dr_norm = sum(&dr.square())?.sqrt();
        let scale = (MAX_MOVE / dr_norm.clamp_min(1e-300)).clamp_max(1.0);
        let moving = done.logical_not().to_kind(Kind::Double);
        x = &x + dr * atoms(&(scale * &moving))?;
        v = &v * atoms(&moving)?;
    }
    let converged = Vec::<bool>::try_from(&done)?;
    Ok(Relaxed {
        pos: x,
        steps,
        converged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use physcon::testing::{PairEnergy, PairPotential};
    use tch::Device;

    /// Two harmonic dimers of different length relax to the bond length r0,
    /// each on its own schedule, and a converged one no longer moves.
    #[test]
    fn dimers_relax_to_the_bond_length() {
        let layout = BatchLayout::from_counts(&[2, 2], Device::Cpu).unwrap();
        let model = PairEnergy::new(PairPotential::Harmonic { k: 20.0, r0: 1.1 }, &layout).unwrap();
        let pos =
            Tensor::from_slice(&[0.0f64, 0., 0., 1.5, 0., 0., 5.0, 0., 0., 5.0, 1.105, 0.]).reshape([4, 3]);
        let settings = Fire {
            fmax: 1e-4,
            max_steps: 2000,
        };
        let out = fire(&model, &pos, &layout, &settings).unwrap();
        assert_eq!(out.converged, vec![true, true]);
        let d = |i: i64, j: i64| (out.pos.get(i) - out.pos.get(j)).norm().double_value(&[]);
        // |F| = k |r - r0| < fmax on both atoms.
        assert!((d(0, 1) - 1.1).abs() < 1e-4 / 20.0 * 1.01, "{}", d(0, 1));
        assert!((d(2, 3) - 1.1).abs() < 1e-4 / 20.0 * 1.01, "{}", d(2, 3));
        assert!(out.steps.iter().all(|&s| s > 0 && s < 2000));
        // The second dimer starts 0.005 Å from r0, the first 0.4 Å: it converges first.
        assert!(out.steps[1] < out.steps[0], "{:?}", out.steps);
        // Bad settings name their flag.
        let bad = Fire {
            fmax: 0.0,
            ..settings
        };
        assert!(matches!(
            fire(&model, &pos, &layout, &bad),
            Err(Error::Flag { flag: "--fmax", .. })
        ));
    }
}
