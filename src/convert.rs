//! Tensors to host arrays and back, knowing nothing of batches: the copies
//! under [`crate::array`]'s public functions and the `from_arrays` entry points.

use ndarray::{Array, ArrayBase, ArrayD, Data, Dimension};
use tch::kind::Element;
use tch::{Kind, Tensor};

use crate::error::Result;

/// A float tensor of known rank as `f64` on the host: one copy (tch moves it to
/// the CPU, makes it contiguous and casts it in that copy).
pub(crate) fn host<D: Dimension>(t: &Tensor) -> Result<Array<f64, D>> {
    let dynamic: ArrayD<f64> = (&t.detach().f_to_kind(Kind::Double)?).try_into()?;
    Ok(dynamic.into_dimensionality().map_err(tch::TchError::from)?)
}

/// A host array as a CPU tensor of its element type and shape; any memory
/// layout (tch's own conversion takes only standard-layout arrays).
pub(crate) fn tensor<S, D>(array: &ArrayBase<S, D>) -> Result<Tensor>
where
    S: Data,
    S::Elem: Element + Clone,
    D: Dimension,
{
    Ok(Tensor::try_from(&array.as_standard_layout())?)
}
