//! The optimiser: Adam with its state in plain tensors, so checkpoints carry it.

use crate::Result;
use tch::{Kind, Tensor};

/// Zeroes the gradients of `params` that backward has defined.
///
/// Zeros rather than undefined gradients: a parameter a step does not reach
/// still gets Adam's update from its moments, as in the runs this example reports.
pub fn zero_grads(params: &[Tensor]) {
    for p in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.f_zero_();
        }
    }
}

/// Adam (betas 0.9, 0.999, eps 1e-8) with global gradient-norm clipping.
pub struct Adam {
    pub(crate) m: Vec<Tensor>,
    pub(crate) v: Vec<Tensor>,
    /// Steps taken (the bias corrections' exponent).
    pub(crate) t: i64,
}

impl Adam {
    pub fn new(params: &[Tensor]) -> Self {
        Self {
            m: params.iter().map(Tensor::zeros_like).collect(),
            v: params.iter().map(Tensor::zeros_like).collect(),
            t: 0,
        }
    }

    /// First moments, one per parameter.
    pub fn first_moments(&self) -> &[Tensor] {
        &self.m
    }

    /// One optimiser step on `loss`: zero the gradients, backward, then
    /// [`Adam::step`]; returns the gradient norm before clipping.
    pub fn minimise(&mut self, params: &[Tensor], loss: &Tensor, lr: f64, clip: f64) -> Result<f64> {
        zero_grads(params);
        loss.f_backward()?;
        Ok(self.step(params, lr, clip))
    }

    /// One Adam step after clipping the global gradient norm to `clip`; returns the norm before clipping.
    pub fn step(&mut self, params: &[Tensor], lr: f64, clip: f64) -> f64 {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        self.t += 1;
        let grads: Vec<Option<Tensor>> = params
            .iter()
            .map(|p| Some(p.grad()).filter(Tensor::defined))
            .collect();
        let norm = grads
            .iter()
            .flatten()
            .map(|g| g.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt();
        let scale = if norm > clip { clip / norm } else { 1.0 };
        tch::no_grad(|| {
            for ((p, g), (m, v)) in params
                .iter()
                .zip(&grads)
                .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            {
                let Some(g) = g else { continue };
                let g = g * scale;
                *m = &*m * b1 + &g * (1.0 - b1);
                *v = &*v * b2 + g.square() * (1.0 - b2);
                let m_hat = &*m / (1.0 - b1.powi(self.t as i32));
                let v_hat = &*v / (1.0 - b2.powi(self.t as i32));
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&(m_hat / (v_hat.sqrt() + eps) * lr));
            }
        });
        norm
    }
}
