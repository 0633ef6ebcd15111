//! Argument checks shared by the public functions.
//!
//! Each returns the documented [`Error`] variant naming the argument, so no
//! bad tensor reaches libtorch (which would panic in tch's non-`f_` wrappers
//! or segfault in `run_backward`).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// What the checks need of a batch: its device and sizes.
///
/// [`crate::BatchLayout`] is the implementation; a trait, so that this ground
/// floor of the crate imports nothing above it.
pub(crate) trait Extent {
    fn device(&self) -> Device;
    fn num_atoms(&self) -> i64;
    fn num_molecules(&self) -> i64;
}

pub(crate) fn is_float(kind: Kind) -> bool {
    matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double)
}

pub(crate) fn float(arg: &'static str, t: &Tensor) -> Result<()> {
    if !t.defined() {
        return Err(Error::InvalidArgument {
            arg,
            reason: "tensor is undefined".into(),
        });
    }
    float_kind(arg, t.f_kind()?)
}

/// An i64 tensor (indices, atomic numbers, steps).
pub(crate) fn int64(arg: &'static str, t: &Tensor) -> Result<()> {
    let got = t.f_kind()?;
    if got == Kind::Int64 {
        Ok(())
    } else {
        Err(Error::Dtype {
            arg,
            expected: "Int64".into(),
            got,
        })
    }
}

/// Every value of a non-empty i64 tensor lies in `lo..bound`; else the offending extreme.
pub(crate) fn values_in(arg: &'static str, t: &Tensor, lo: i64, bound: i64) -> Result<()> {
    for index in [t.f_min()?.f_int64_value(&[])?, t.f_max()?.f_int64_value(&[])?] {
        if !(lo..bound).contains(&index) {
            return Err(Error::IndexOutOfRange { arg, index, bound });
        }
    }
    Ok(())
}

/// A floating-point element type asked for by the caller.
pub(crate) fn float_kind(arg: &'static str, kind: Kind) -> Result<()> {
    if is_float(kind) {
        Ok(())
    } else {
        Err(Error::Dtype {
            arg,
            expected: "a floating-point kind (f16, bf16, f32, f64)".into(),
            got: kind,
        })
    }
}

pub(crate) fn same_kind(arg: &'static str, t: &Tensor, kind: Kind) -> Result<()> {
    let got = t.f_kind()?;
    if got == kind {
        Ok(())
    } else {
        Err(Error::Dtype {
            arg,
            expected: format!("{kind:?} (the dtype of the other inputs)"),
            got,
        })
    }
}

pub(crate) fn device(arg: &'static str, t: &Tensor, layout: &impl Extent) -> Result<()> {
    on_device(arg, t, layout.device())
}

/// `t` lives on `expected` (the device of the tensor it goes with).
pub(crate) fn on_device(arg: &'static str, t: &Tensor, expected: Device) -> Result<()> {
    let got = t.device();
    if got == expected {
        Ok(())
    } else {
        Err(Error::Device { arg, expected, got })
    }
}

/// Scalars reduced on the device, read to the host in one transfer (one
/// synchronisation on CUDA however many there are), as f64.
pub(crate) fn host_scalars(scalars: &[Tensor]) -> Result<Vec<f64>> {
    let wide = scalars
        .iter()
        .map(|s| Ok(s.f_to_kind(Kind::Double)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Vec::<f64>::try_from(
        Tensor::f_stack(&wide, 0)?.f_to_device(Device::Cpu)?,
    )?)
}

pub(crate) fn shape(arg: &'static str, t: &Tensor, expected: &[i64], words: &str) -> Result<()> {
    dims(arg, t.size(), expected, words)
}

/// A host array's shape, reported as [`shape`] reports a tensor's.
pub(crate) fn array_shape(arg: &'static str, got: &[usize], expected: &[i64], words: &str) -> Result<()> {
    dims(arg, got.iter().map(|&d| d as i64).collect(), expected, words)
}

fn dims(arg: &'static str, got: Vec<i64>, expected: &[i64], words: &str) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::Shape {
            arg,
            expected: format!("{words} = {expected:?}"),
            got,
        })
    }
}

pub(crate) fn finite(arg: &'static str, t: &Tensor) -> Result<()> {
    if t.numel() == 0 {
        return Ok(());
    }
    // A sum is finite whenever every element is, so one reduction and one host read
    // clear the usual case; `isfinite().all()` costs three kernels and is kept for
    // the rare non-finite sum (a bad element, or finite elements that overflow).
    let sum = t.detach().f_sum(t.f_kind()?)?.f_double_value(&[])?;
    if sum.is_finite() || bool::try_from(t.f_isfinite()?.f_all()?)? {
        Ok(())
    } else {
        Err(Error::NonFinite { arg })
    }
}

/// A float tensor on the layout's device with the given shape (metadata only: no host read).
pub(crate) fn float_meta(
    arg: &'static str,
    t: &Tensor,
    layout: &impl Extent,
    expected: &[i64],
    words: &str,
) -> Result<()> {
    float(arg, t)?;
    device(arg, t, layout)?;
    shape(arg, t, expected, words)
}

/// Finiteness checks collected over one call and settled with one host read.
///
/// Arguments are reported in the order they were added, so an input is named
/// before any output computed from it.
pub(crate) struct Finite {
    pending: Option<Vec<(&'static str, Tensor)>>,
}

impl Finite {
    /// Finiteness checked at [`Finite::finish`].
    pub(crate) fn full() -> Self {
        Self {
            pending: Some(Vec::new()),
        }
    }

    /// Nothing checked: every queued tensor is dropped (the loss's `Checks::Metadata`).
    pub(crate) fn skipped() -> Self {
        Self { pending: None }
    }

    /// Queues `t` (no host read yet).
    pub(crate) fn add(&mut self, arg: &'static str, t: &Tensor) {
        if let Some(pending) = self.pending.as_mut() {
            if t.numel() > 0 {
                pending.push((arg, t.detach()));
            }
        }
    }

    /// Metadata checks of `[N, 3]` atom coordinates now, finiteness queued.
    pub(crate) fn atoms3(&mut self, arg: &'static str, t: &Tensor, layout: &impl Extent) -> Result<()> {
        float_meta(arg, t, layout, &[layout.num_atoms(), 3], "[N, 3]")?;
        self.add(arg, t);
        Ok(())
    }

    /// Metadata checks of `[B]` molecule values now, finiteness queued.
    pub(crate) fn molecules(&mut self, arg: &'static str, t: &Tensor, layout: &impl Extent) -> Result<()> {
        float_meta(arg, t, layout, &[layout.num_molecules()], "[B]")?;
        self.add(arg, t);
        Ok(())
    }

    /// Settles every queued check with one reduction per tensor and one host read.
    pub(crate) fn finish(self) -> Result<()> {
        let Some(pending) = self.pending else {
            return Ok(());
        };
        match pending.as_slice() {
            [] => Ok(()),
            [(arg, t)] => finite(arg, t),
            _ => {
                // Each sum in its own dtype, so that an f16 sum overflows as f16 would.
                let sums = pending
                    .iter()
                    .map(|(_, t)| Ok(t.f_sum(t.f_kind()?)?))
                    .collect::<Result<Vec<_>>>()?;
                for ((arg, t), sum) in pending.iter().zip(host_scalars(&sums)?) {
                    // Only a non-finite sum needs `finite`'s exact test.
                    if !sum.is_finite() {
                        finite(arg, t)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Atom-level `[N, 3]` coordinates (positions, forces, noise).
pub(crate) fn atoms3(arg: &'static str, t: &Tensor, layout: &impl Extent) -> Result<()> {
    float_meta(arg, t, layout, &[layout.num_atoms(), 3], "[N, 3]")?;
    finite(arg, t)
}

/// An optional boolean mask of the given length.
pub(crate) fn mask(arg: &'static str, t: &Tensor, layout: &impl Extent, len: i64) -> Result<()> {
    let kind = t.f_kind()?;
    if kind != Kind::Bool {
        return Err(Error::Dtype {
            arg,
            expected: "Bool".into(),
            got: kind,
        });
    }
    device(arg, t, layout)?;
    shape(arg, t, &[len], "[len]")
}

pub(crate) fn positive(arg: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::NonPositive { arg, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_accepts_finite_values_whose_sum_overflows() {
        let big = Tensor::from_slice(&[3.0e38f32, 3.0e38, -1.0]);
        assert!(big.sum(Kind::Float).double_value(&[]).is_infinite());
        assert!(finite("x", &big).is_ok());
        let half = Tensor::from_slice(&[60000.0f32; 4]).to_kind(Kind::Half);
        assert!(finite("x", &half).is_ok());
    }

    #[test]
    fn finite_rejects_every_non_finite_value() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for kind in [Kind::Half, Kind::Float, Kind::Double] {
                let t = Tensor::from_slice(&[1.0f64, bad, 2.0]).to_kind(kind);
                assert!(
                    matches!(finite("x", &t), Err(Error::NonFinite { arg: "x" })),
                    "{bad} {kind:?}"
                );
            }
        }
        // Opposite infinities sum to NaN: still caught.
        let both = Tensor::from_slice(&[f64::INFINITY, f64::NEG_INFINITY]);
        assert!(finite("x", &both).is_err());
        assert!(finite("x", &Tensor::from_slice::<f64>(&[])).is_ok());
    }
}
