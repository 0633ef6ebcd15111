//! `physcon._physcon`: physcon's losses for PyTorch, on the libtorch the
//! `torch` wheel ships.
//!
//! Tensors cross the boundary without a copy (`pyo3-tch` unpacks a
//! `torch.Tensor` into the same libtorch tensor), so a loss computed here is
//! part of the caller's autograd graph and `loss.backward()` in Python reaches
//! the caller's parameters, double backward included.
//!
//! Threading: every computation runs with the GIL released
//! (`Python::allow_threads`) and an energy model written in Python re-acquires
//! it for its call only (`Python::with_gil`). Autograd can run Python code on
//! other threads (the CUDA engine's device threads, a user's
//! `torch.autograd.Function`), which would deadlock against a held GIL.
//!
//! Errors: physcon's errors become `ValueError` (`TypeError` for a dtype) with
//! physcon's message, which names the argument; an exception raised by the
//! user's energy model travels through physcon as [`physcon::Error::Model`]
//! and is raised again as the very same exception object, traceback included.
//!
//! The class and function docs start with the library's own rustdoc text
//! (the formula, units and shapes), extracted by `build.rs`.

use std::sync::{Mutex, MutexGuard};

use physcon::diffusion as pd;
use physcon::losses::{self as pl, Checks};
use physcon::tch::{Kind, Tensor};
use physcon::{BatchLayout, EnergyModel, Error, MolBatch};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3_tch::PyTensor;

/// The library's doc text of an item, as `build.rs` extracted it.
macro_rules! lib_doc {
    ($name:literal) => {
        include_str!(concat!(env!("OUT_DIR"), "/doc_", $name, ".md"))
    };
}

// ---------------------------------------------------------------------------
// Errors and the GIL

/// physcon's error as the Python exception a PyTorch user expects.
fn py_err(err: Error) -> PyErr {
    match err {
        Error::Model(source) => match source.downcast::<PyErr>() {
            // The user's own exception, unchanged (type, message, traceback).
            Ok(exception) => *exception,
            Err(other) => PyRuntimeError::new_err(other.to_string()),
        },
        err @ Error::Dtype { .. } => PyTypeError::new_err(err.to_string()),
        err @ Error::Torch(_) => PyRuntimeError::new_err(err.to_string()),
        err @ Error::Io { .. } => PyOSError::new_err(err.to_string()),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// Whether autograd records operations on this thread (`torch.is_grad_enabled()`).
fn grad_enabled() -> bool {
    // libtorch only offers "set and return the previous value": set it back at once.
    // SAFETY: plain calls into libtorch's thread-local grad mode, no pointers involved.
    unsafe {
        let previous = pyo3_tch::torch_sys::at_grad_set_enabled(1);
        pyo3_tch::torch_sys::at_grad_set_enabled(previous);
        previous != 0
    }
}

/// Runs `f` without the GIL and turns physcon's error into a Python exception.
fn released<T: Send>(py: Python<'_>, f: impl FnOnce() -> physcon::Result<T> + Send) -> PyResult<T> {
    py.allow_threads(f).map_err(py_err)
}

/// Runs `f`, which differentiates an energy model, without the GIL.
///
/// Under `torch.no_grad()` it behaves as a PyTorch force field does
/// (`torch.enable_grad()` inside): the derivatives are taken, and what comes
/// back has no graph. Returns the result and whether it must be detached.
fn released_with_grad<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> physcon::Result<T> + Send,
) -> PyResult<(T, bool)> {
    let enabled = grad_enabled();
    let out = released(py, || physcon::tch::with_grad(f))?;
    Ok((out, !enabled))
}

fn detach_if(t: Tensor, detach: bool) -> Tensor {
    if detach {
        t.detach()
    } else {
        t
    }
}

/// Locks a pyclass's state. The state holds libtorch tensors, which are `Send`
/// but not `Sync`, and pyo3 shares class instances between threads: the mutex
/// makes that sound. A poisoned lock (a panic elsewhere) still holds valid tensors.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Energy models written in Python

/// A Python callable `pos -> [B]` energies as a physcon [`EnergyModel`].
///
/// It is moved into the computation and dropped there, without the GIL: pyo3
/// then defers the reference count's decrement to the next time the GIL is
/// held (at the latest when the call returns to Python), which is sound.
struct PyEnergy(Py<PyAny>);

impl PyEnergy {
    fn call(
        &self,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
    ) -> physcon::Result<Tensor> {
        // Called with the GIL released (see `released`): take it for the model only.
        Python::with_gil(|py| {
            let out = self.0.call1(py, args(py)?)?;
            let out = out.bind(py);
            match out.extract::<PyTensor>() {
                Ok(t) => Ok(t.0),
                Err(_) => Err(PyTypeError::new_err(format!(
                    "the energy model must return a torch.Tensor of molecule energies [B], got {}",
                    out.get_type()
                ))),
            }
        })
        .map_err(|e| Error::Model(Box::new(e)))
    }
}

impl EnergyModel for PyEnergy {
    fn energy(&self, pos: &Tensor) -> physcon::Result<Tensor> {
        self.call(|py| PyTuple::new(py, [PyTensor(pos.shallow_clone())]))
    }
}

// ---------------------------------------------------------------------------
// Batches

/// A validated batch vector: which molecule each atom belongs to.
///
/// `Batch(batch, num_molecules=None)` with `batch` an int64 tensor `[N]` of
/// molecule indices in `0..B` (the PyTorch Geometric `batch` vector, any
/// order, every molecule with at least one atom). `num_molecules` defaults
/// to `batch.max() + 1`.
///
/// Every function that takes `batch` accepts the tensor itself; build a
/// `Batch` once per step and pass it instead to validate and count once
/// (each tensor call reads the batch to the host).
#[pyclass(module = "physcon", name = "Batch")]
struct PyBatch {
    layout: Mutex<BatchLayout>,
}

#[pymethods]
impl PyBatch {
    #[new]
    #[pyo3(signature = (batch, num_molecules = None))]
    fn new(py: Python<'_>, batch: PyTensor, num_molecules: Option<i64>) -> PyResult<Self> {
        let layout = released(py, || layout_of(batch.0, num_molecules))?;
        Ok(Self {
            layout: Mutex::new(layout),
        })
    }

    /// The batch vector `[N]` (int64).
    #[getter]
    fn batch(&self) -> PyTensor {
        PyTensor(lock(&self.layout).batch().shallow_clone())
    }

    /// The number of molecules B.
    #[getter]
    fn num_molecules(&self) -> i64 {
        lock(&self.layout).num_molecules()
    }

    /// The number of atoms N.
    #[getter]
    fn num_atoms(&self) -> i64 {
        lock(&self.layout).num_atoms()
    }

    /// Atoms per molecule `[B]` (int64), on the batch's device.
    #[getter]
    fn counts(&self) -> PyTensor {
        PyTensor(lock(&self.layout).counts().shallow_clone())
    }

    fn __len__(&self) -> usize {
        lock(&self.layout).num_molecules() as usize
    }

    fn __repr__(&self) -> String {
        let layout = lock(&self.layout);
        format!(
            "Batch(num_molecules={}, num_atoms={}, device={:?})",
            layout.num_molecules(),
            layout.num_atoms(),
            layout.device()
        )
    }
}

fn layout_of(batch: Tensor, num_molecules: Option<i64>) -> physcon::Result<BatchLayout> {
    let count = match num_molecules {
        Some(count) => count,
        // Not an int64 vector with atoms: let the library name the fault.
        None if batch.kind() != Kind::Int64 || batch.dim() != 1 || batch.numel() == 0 => 1,
        None => batch.f_max()?.f_int64_value(&[])?.max(0) + 1,
    };
    BatchLayout::new(&batch, count)
}

/// `batch` as a loss takes it: a `physcon.Batch` or the int64 tensor itself.
enum BatchArg {
    Layout(BatchLayout),
    Tensor(Tensor),
}

impl<'py> FromPyObject<'py> for BatchArg {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(batch) = ob.downcast::<PyBatch>() {
            return Ok(Self::Layout(lock(&batch.borrow().layout).clone()));
        }
        match ob.extract::<PyTensor>() {
            Ok(t) => Ok(Self::Tensor(t.0)),
            Err(_) => Err(PyTypeError::new_err(format!(
                "`batch`: expected a torch.Tensor [N] (int64) or a physcon.Batch, got {}",
                ob.get_type()
            ))),
        }
    }
}

impl BatchArg {
    /// The validated layout (done without the GIL, inside the computation).
    fn layout(self) -> physcon::Result<BatchLayout> {
        match self {
            Self::Layout(layout) => Ok(layout),
            Self::Tensor(batch) => layout_of(batch, None),
        }
    }
}

// ---------------------------------------------------------------------------
// Settings shared by the losses

/// Which model a consistency loss trains.
///
/// - `TO_STRUCTURE` (default): the energy model is an exact frozen teacher;
///   gradient reaches the structure (and the structure model), no parameter
///   used only by the energy evaluation, even with a shared encoder.
/// - `BOTH`: plain backward into everything that took part.
/// - `TO_ENERGY`: the structure is a constant; only the energy model moves.
///
/// Losses also accept the strings `"to_structure"`, `"both"`, `"to_energy"`.
#[pyclass(module = "physcon", name = "GradientFlow", eq, eq_int, frozen, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PyFlow {
    #[pyo3(name = "TO_STRUCTURE")]
    ToStructure,
    #[pyo3(name = "BOTH")]
    Both,
    #[pyo3(name = "TO_ENERGY")]
    ToEnergy,
}

impl PyFlow {
    fn lib(self) -> pl::GradientFlow {
        match self {
            Self::ToStructure => pl::GradientFlow::ToStructure,
            Self::Both => pl::GradientFlow::Both,
            Self::ToEnergy => pl::GradientFlow::ToEnergy,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::ToStructure => "TO_STRUCTURE",
            Self::Both => "BOTH",
            Self::ToEnergy => "TO_ENERGY",
        }
    }

    fn extract(ob: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(ob) = ob else {
            return Ok(Self::ToStructure);
        };
        if let Ok(flow) = ob.extract::<Self>() {
            return Ok(flow);
        }
        let text: Option<String> = ob.extract().ok();
        match text.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("to_structure") => Ok(Self::ToStructure),
            Some("both") => Ok(Self::Both),
            Some("to_energy") => Ok(Self::ToEnergy),
            _ => Err(PyValueError::new_err(format!(
                "`flow`: expected a physcon.GradientFlow or one of 'to_structure', 'both', 'to_energy', got {}",
                ob.repr()?
            ))),
        }
    }
}

#[pymethods]
impl PyFlow {
    fn __repr__(&self) -> String {
        format!("GradientFlow.{}", self.name())
    }
}

/// `checks="full"` (default: finiteness of inputs and result, one host read per
/// call) or `"metadata"` (shapes, dtypes and devices only: no synchronisation).
fn checks_of(text: &str) -> PyResult<Checks> {
    match text {
        "full" => Ok(Checks::Full),
        "metadata" => Ok(Checks::Metadata),
        _ => Err(PyValueError::new_err(format!(
            "`checks`: expected 'full' or 'metadata', got {text:?}"
        ))),
    }
}

fn checks_name(checks: Checks) -> &'static str {
    match checks {
        Checks::Metadata => "metadata",
        _ => "full",
    }
}

// ---------------------------------------------------------------------------
// Per-molecule values

/// A loss before its reduction over molecules: one value per molecule, `[B]`.
///
/// `values` keeps its autograd graph (zero where `mask` is false);
/// `mean()` equals the loss's scalar in value and gradient;
/// `weighted_mean(weights)` is `sum_b w_b m_b l_b / sum_b w_b m_b` over
/// labelled molecules (weights `[B]`, finite, `>= 0`, constants).
#[pyclass(module = "physcon", name = "PerMolecule")]
struct PyPerMolecule {
    inner: Mutex<pl::PerMolecule>,
    /// Made under `torch.no_grad()`: what leaves has no graph.
    detach: bool,
}

/// What a loss's computation returns: the per-molecule values, and whether
/// they were made under `torch.no_grad()` (see `released_with_grad`).
type Computed = (pl::PerMolecule, bool);

impl PyPerMolecule {
    fn of((inner, detach): Computed) -> Self {
        Self {
            inner: Mutex::new(inner),
            detach,
        }
    }
}

/// `loss(...)`: the mean of the per-molecule values, which is the library's
/// scalar loss in value and gradient.
fn scalar(py: Python<'_>, (per, detach): Computed) -> PyResult<PyTensor> {
    let value = released(py, move || per.mean())?;
    Ok(PyTensor(detach_if(value, detach)))
}

#[pymethods]
impl PyPerMolecule {
    /// The per-molecule values `[B]` (zero where unlabelled).
    #[getter]
    fn values(&self) -> PyTensor {
        PyTensor(detach_if(lock(&self.inner).values().shallow_clone(), self.detach))
    }

    /// Which molecules carry the label (`[B]` bool), or `None` when all do.
    #[getter]
    fn mask(&self) -> Option<PyTensor> {
        lock(&self.inner).labelled().map(|m| PyTensor(m.shallow_clone()))
    }

    /// The mean over labelled molecules (all without a mask): the loss's scalar.
    fn mean(&self, py: Python<'_>) -> PyResult<PyTensor> {
        let inner = &self.inner;
        let value = released(py, || lock(inner).mean())?;
        Ok(PyTensor(detach_if(value, self.detach)))
    }

    /// `sum_b w_b m_b l_b / sum_b w_b m_b`: the weighted mean over labelled molecules.
    fn weighted_mean(&self, py: Python<'_>, weights: PyTensor) -> PyResult<PyTensor> {
        let inner = &self.inner;
        let value = released(py, move || lock(inner).weighted_mean(&weights))?;
        Ok(PyTensor(detach_if(value, self.detach)))
    }

    fn __len__(&self) -> usize {
        lock(&self.inner).values().size().first().copied().unwrap_or(0) as usize
    }

    fn __repr__(&self) -> String {
        let inner = lock(&self.inner);
        format!(
            "PerMolecule(num_molecules={}, masked={})",
            inner.values().size().first().copied().unwrap_or(0),
            if inner.labelled().is_some() {
                "True"
            } else {
                "False"
            }
        )
    }
}

// ---------------------------------------------------------------------------
// Supervised losses

#[pyclass(module = "physcon", name = "EnergyLoss")]
#[doc = lib_doc!("EnergyLoss")]
///
/// Python: `EnergyLoss(metric="mse", *, delta=1.0, per_atom=False, checks="full")`
/// with `metric` one of `"mse"`, `"l1"`, `"huber"` (`delta` in eV, or eV/atom
/// with `per_atom`); `loss(pred, target, batch, mask=None)` with `pred`,
/// `target` `[B]` (eV) and `mask` `[B]` bool (true = labelled; unlabelled
/// targets may be NaN).
struct PyEnergyLoss {
    inner: pl::EnergyLoss,
    // The settings, for `metric` and `repr`: the library's loss is built from them, not read back.
    metric: pl::EnergyMetric,
    per_atom: bool,
    checks: Checks,
}

#[pymethods]
impl PyEnergyLoss {
    #[new]
    #[pyo3(signature = (metric = "mse", *, delta = 1.0, per_atom = false, checks = "full"))]
    fn new(metric: &str, delta: f64, per_atom: bool, checks: &str) -> PyResult<Self> {
        let metric = match metric {
            "mse" => pl::EnergyMetric::Mse,
            "l1" => pl::EnergyMetric::L1,
            "huber" => pl::EnergyMetric::Huber { delta },
            _ => {
                return Err(PyValueError::new_err(format!(
                    "`metric`: expected 'mse', 'l1' or 'huber', got {metric:?}"
                )))
            }
        };
        let checks = checks_of(checks)?;
        let inner = pl::EnergyLoss::new(metric)
            .map_err(py_err)?
            .per_atom(per_atom)
            .checks(checks);
        Ok(Self {
            inner,
            metric,
            per_atom,
            checks,
        })
    }

    #[pyo3(signature = (pred, target, batch, mask = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        pred: PyTensor,
        target: PyTensor,
        batch: BatchArg,
        mask: Option<PyTensor>,
    ) -> PyResult<PyTensor> {
        scalar(py, self.run(py, pred, target, batch, mask)?)
    }

    /// The error of every molecule, `[B]`, with the mask.
    #[pyo3(signature = (pred, target, batch, mask = None))]
    fn per_molecule(
        &self,
        py: Python<'_>,
        pred: PyTensor,
        target: PyTensor,
        batch: BatchArg,
        mask: Option<PyTensor>,
    ) -> PyResult<PyPerMolecule> {
        Ok(PyPerMolecule::of(self.run(py, pred, target, batch, mask)?))
    }

    #[getter]
    fn metric(&self) -> &'static str {
        match self.metric {
            pl::EnergyMetric::L1 => "l1",
            pl::EnergyMetric::Huber { .. } => "huber",
            _ => "mse",
        }
    }

    fn __repr__(&self) -> String {
        let delta = match self.metric {
            pl::EnergyMetric::Huber { delta } => format!(", delta={delta}"),
            _ => String::new(),
        };
        format!(
            "EnergyLoss(metric='{}'{delta}, per_atom={}, checks='{}')",
            self.metric(),
            if self.per_atom { "True" } else { "False" },
            checks_name(self.checks)
        )
    }
}

impl PyEnergyLoss {
    fn run(
        &self,
        py: Python<'_>,
        pred: PyTensor,
        target: PyTensor,
        batch: BatchArg,
        mask: Option<PyTensor>,
    ) -> PyResult<Computed> {
        supervised(py, self.inner, pred, target, batch, mask)
    }
}

/// The library's supervised losses: a prediction against labels, with a mask.
trait Supervised: Copy + Send {
    fn per_molecule(
        &self,
        pred: &Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
        layout: &BatchLayout,
    ) -> physcon::Result<pl::PerMolecule>;
}

impl Supervised for pl::EnergyLoss {
    fn per_molecule(
        &self,
        pred: &Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
        layout: &BatchLayout,
    ) -> physcon::Result<pl::PerMolecule> {
        self.forward_per_molecule(pred, target, mask, layout)
    }
}

impl Supervised for pl::ForceLoss {
    fn per_molecule(
        &self,
        pred: &Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
        layout: &BatchLayout,
    ) -> physcon::Result<pl::PerMolecule> {
        self.forward_per_molecule(pred, target, mask, layout)
    }
}

/// Runs a supervised loss without the GIL (labels need no derivative, so
/// `torch.no_grad()` acts as on any PyTorch loss).
fn supervised(
    py: Python<'_>,
    loss: impl Supervised,
    pred: PyTensor,
    target: PyTensor,
    batch: BatchArg,
    mask: Option<PyTensor>,
) -> PyResult<Computed> {
    let per = released(py, move || {
        let layout = batch.layout()?;
        loss.per_molecule(&pred, &target, mask.as_deref(), &layout)
    })?;
    Ok((per, false))
}

#[pyclass(module = "physcon", name = "ForceLoss")]
#[doc = lib_doc!("ForceLoss")]
///
/// Python: `ForceLoss(*, checks="full")`; `loss(pred, target, batch, mask=None)`
/// with `pred`, `target` `[N, 3]` (eV/Å) and `mask` `[B]` bool.
struct PyForceLoss {
    inner: pl::ForceLoss,
    checks: Checks,
}

#[pymethods]
impl PyForceLoss {
    #[new]
    #[pyo3(signature = (*, checks = "full"))]
    fn new(checks: &str) -> PyResult<Self> {
        let checks = checks_of(checks)?;
        Ok(Self {
            inner: pl::ForceLoss::new().checks(checks),
            checks,
        })
    }

    #[pyo3(signature = (pred, target, batch, mask = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        pred: PyTensor,
        target: PyTensor,
        batch: BatchArg,
        mask: Option<PyTensor>,
    ) -> PyResult<PyTensor> {
        scalar(py, self.run(py, pred, target, batch, mask)?)
    }

    /// `(1/3n_b) sum_i ||F_pred,i - F_ref,i||^2` of every molecule, `[B]`, with the mask.
    #[pyo3(signature = (pred, target, batch, mask = None))]
    fn per_molecule(
        &self,
        py: Python<'_>,
        pred: PyTensor,
        target: PyTensor,
        batch: BatchArg,
        mask: Option<PyTensor>,
    ) -> PyResult<PyPerMolecule> {
        Ok(PyPerMolecule::of(self.run(py, pred, target, batch, mask)?))
    }

    fn __repr__(&self) -> String {
        format!("ForceLoss(checks='{}')", checks_name(self.checks))
    }
}

impl PyForceLoss {
    fn run(
        &self,
        py: Python<'_>,
        pred: PyTensor,
        target: PyTensor,
        batch: BatchArg,
        mask: Option<PyTensor>,
    ) -> PyResult<Computed> {
        supervised(py, self.inner, pred, target, batch, mask)
    }
}

#[pyclass(module = "physcon", name = "DenoisingLoss")]
#[doc = lib_doc!("DenoisingLoss")]
///
/// Python: `DenoisingLoss(*, checks="full")`; `loss(eps_hat, eps, batch)` with
/// `eps_hat`, `eps` `[N, 3]` (the noise is a constant target).
struct PyDenoisingLoss {
    inner: pl::DenoisingLoss,
    checks: Checks,
}

#[pymethods]
impl PyDenoisingLoss {
    #[new]
    #[pyo3(signature = (*, checks = "full"))]
    fn new(checks: &str) -> PyResult<Self> {
        let checks = checks_of(checks)?;
        Ok(Self {
            inner: pl::DenoisingLoss::new().checks(checks),
            checks,
        })
    }

    fn __call__(
        &self,
        py: Python<'_>,
        eps_hat: PyTensor,
        eps: PyTensor,
        batch: BatchArg,
    ) -> PyResult<PyTensor> {
        scalar(py, self.run(py, eps_hat, eps, batch)?)
    }

    /// `(1/n_b) sum_i ||eps_hat_i - eps_i||^2` of every molecule, `[B]`.
    fn per_molecule(
        &self,
        py: Python<'_>,
        eps_hat: PyTensor,
        eps: PyTensor,
        batch: BatchArg,
    ) -> PyResult<PyPerMolecule> {
        Ok(PyPerMolecule::of(self.run(py, eps_hat, eps, batch)?))
    }

    fn __repr__(&self) -> String {
        format!("DenoisingLoss(checks='{}')", checks_name(self.checks))
    }
}

impl PyDenoisingLoss {
    fn run(&self, py: Python<'_>, eps_hat: PyTensor, eps: PyTensor, batch: BatchArg) -> PyResult<Computed> {
        let loss = self.inner;
        let per = released(py, move || {
            let layout = batch.layout()?;
            loss.forward_per_molecule(&eps_hat, &eps, &layout)
        })?;
        Ok((per, false))
    }
}

// ---------------------------------------------------------------------------
// Consistency losses

#[pyclass(module = "physcon", name = "StationarityLoss")]
#[doc = lib_doc!("StationarityLoss")]
///
/// Python: `StationarityLoss(*, flow=GradientFlow.TO_STRUCTURE, checks="full")`;
/// `loss(energy, structure, batch)` with `energy` any callable `pos [N, 3] ->
/// [B]` energies (an `nn.Module`, or a lambda closing over species and batch)
/// and `structure` `[N, 3]` (Å), e.g. a generated structure with its graph.
struct PyStationarityLoss {
    inner: pl::StationarityLoss,
    flow: PyFlow,
    checks: Checks,
}

#[pymethods]
impl PyStationarityLoss {
    #[new]
    #[pyo3(signature = (*, flow = None, checks = "full"))]
    fn new(flow: Option<&Bound<'_, PyAny>>, checks: &str) -> PyResult<Self> {
        let (flow, checks) = (PyFlow::extract(flow)?, checks_of(checks)?);
        Ok(Self {
            inner: pl::StationarityLoss::new().flow(flow.lib()).checks(checks),
            flow,
            checks,
        })
    }

    fn __call__(
        &self,
        py: Python<'_>,
        energy: PyObject,
        structure: PyTensor,
        batch: BatchArg,
    ) -> PyResult<PyTensor> {
        scalar(py, self.run(py, energy, structure, batch)?)
    }

    /// `(1/n_b) sum_{i in b} ||dE/dR_hat_i||^2` of every molecule, `[B]`.
    fn per_molecule(
        &self,
        py: Python<'_>,
        energy: PyObject,
        structure: PyTensor,
        batch: BatchArg,
    ) -> PyResult<PyPerMolecule> {
        Ok(PyPerMolecule::of(self.run(py, energy, structure, batch)?))
    }

    #[getter]
    fn flow(&self) -> PyFlow {
        self.flow
    }

    fn __repr__(&self) -> String {
        format!(
            "StationarityLoss(flow=GradientFlow.{}, checks='{}')",
            self.flow.name(),
            checks_name(self.checks)
        )
    }
}

impl PyStationarityLoss {
    fn run(
        &self,
        py: Python<'_>,
        energy: PyObject,
        structure: PyTensor,
        batch: BatchArg,
    ) -> PyResult<Computed> {
        let loss = self.inner;
        let energy = PyEnergy(energy);
        released_with_grad(py, move || {
            let layout = batch.layout()?;
            loss.forward_per_molecule(&energy, &structure, &layout)
        })
    }
}

#[pyclass(module = "physcon", name = "EnergyDescentLoss")]
#[doc = lib_doc!("EnergyDescentLoss")]
///
/// Python: `EnergyDescentLoss(*, flow=GradientFlow.TO_STRUCTURE, checks="full")`;
/// `loss(energy, structure, reference, batch)` with `structure`, `reference`
/// `[N, 3]` (Å).
struct PyEnergyDescentLoss {
    inner: pl::EnergyDescentLoss,
    flow: PyFlow,
    checks: Checks,
}

#[pymethods]
impl PyEnergyDescentLoss {
    #[new]
    #[pyo3(signature = (*, flow = None, checks = "full"))]
    fn new(flow: Option<&Bound<'_, PyAny>>, checks: &str) -> PyResult<Self> {
        let (flow, checks) = (PyFlow::extract(flow)?, checks_of(checks)?);
        Ok(Self {
            inner: pl::EnergyDescentLoss::new().flow(flow.lib()).checks(checks),
            flow,
            checks,
        })
    }

    fn __call__(
        &self,
        py: Python<'_>,
        energy: PyObject,
        structure: PyTensor,
        reference: PyTensor,
        batch: BatchArg,
    ) -> PyResult<PyTensor> {
        scalar(py, self.run(py, energy, structure, reference, batch)?)
    }

    /// `(E(R_hat_b) - sg E(R_ref,b)) / n_b` of every molecule, `[B]`.
    fn per_molecule(
        &self,
        py: Python<'_>,
        energy: PyObject,
        structure: PyTensor,
        reference: PyTensor,
        batch: BatchArg,
    ) -> PyResult<PyPerMolecule> {
        Ok(PyPerMolecule::of(
            self.run(py, energy, structure, reference, batch)?,
        ))
    }

    #[getter]
    fn flow(&self) -> PyFlow {
        self.flow
    }

    fn __repr__(&self) -> String {
        format!(
            "EnergyDescentLoss(flow=GradientFlow.{}, checks='{}')",
            self.flow.name(),
            checks_name(self.checks)
        )
    }
}

impl PyEnergyDescentLoss {
    fn run(
        &self,
        py: Python<'_>,
        energy: PyObject,
        structure: PyTensor,
        reference: PyTensor,
        batch: BatchArg,
    ) -> PyResult<Computed> {
        let loss = self.inner;
        let energy = PyEnergy(energy);
        released_with_grad(py, move || {
            let layout = batch.layout()?;
            loss.forward_per_molecule(&energy, &structure, &reference, &layout)
        })
    }
}

/// Where score consistency takes the forces of the clean structure from.
enum ForcesArg {
    Model(PyEnergy, Tensor),
    Labels(Tensor),
}

impl ForcesArg {
    fn of(energy: Option<PyObject>, clean: Option<PyTensor>, forces: Option<PyTensor>) -> PyResult<Self> {
        match (energy, clean, forces) {
            (Some(energy), Some(clean), None) => Ok(Self::Model(PyEnergy(energy), clean.0)),
            (None, None, Some(forces)) => Ok(Self::Labels(forces.0)),
            (Some(_), None, None) => Err(PyValueError::new_err(
                "`clean`: the energy model's forces are taken at the clean structure; pass clean=",
            )),
            (None, Some(_), None) => Err(PyValueError::new_err(
                "`energy`: a clean structure needs the energy model whose forces are the target; pass energy=",
            )),
            _ => Err(PyValueError::new_err(
                "`forces`: pass either energy= and clean= (the model's forces) or forces= (force labels), not both",
            )),
        }
    }

    fn lib(&self) -> pl::Forces<'_> {
        match self {
            Self::Model(energy, at) => pl::Forces::Model { energy, at },
            Self::Labels(labels) => pl::Forces::Labels(labels),
        }
    }
}

#[pyclass(module = "physcon", name = "ScoreConsistency")]
#[doc = lib_doc!("ScoreConsistency")]
///
/// Python: `ScoreConsistency(kt, *, flow=GradientFlow.TO_STRUCTURE, checks="full")`
/// with `kt` in eV (`kelvin_to_kt(300.0)` = 0.02585 eV);
/// `loss(eps_hat, level, batch, *, energy=None, clean=None, forces=None)` with
/// `eps_hat` `[N, 3]` the noise prediction at the structure noised from
/// `clean` at `level` (a `NoiseLevel`), and either `energy=` (a callable
/// `pos -> [B]`) with `clean=` `[N, 3]` (Å) for the model's forces, or
/// `forces=` `[N, 3]` (eV/Å) labels.
struct PyScoreConsistency {
    inner: pl::ScoreConsistency,
    flow: PyFlow,
    checks: Checks,
}

#[pymethods]
impl PyScoreConsistency {
    #[new]
    #[pyo3(signature = (kt, *, flow = None, checks = "full"))]
    fn new(kt: f64, flow: Option<&Bound<'_, PyAny>>, checks: &str) -> PyResult<Self> {
        let (flow, checks) = (PyFlow::extract(flow)?, checks_of(checks)?);
        Ok(Self {
            inner: pl::ScoreConsistency::new(kt)
                .map_err(py_err)?
                .flow(flow.lib())
                .checks(checks),
            flow,
            checks,
        })
    }

    #[pyo3(signature = (eps_hat, level, batch, *, energy = None, clean = None, forces = None))]
    #[allow(clippy::too_many_arguments)]
    fn __call__(
        &self,
        py: Python<'_>,
        eps_hat: PyTensor,
        level: PyRef<'_, PyNoiseLevel>,
        batch: BatchArg,
        energy: Option<PyObject>,
        clean: Option<PyTensor>,
        forces: Option<PyTensor>,
    ) -> PyResult<PyTensor> {
        let forces = ForcesArg::of(energy, clean, forces)?;
        scalar(py, self.run(py, eps_hat, &level, batch, forces)?)
    }

    /// `(1/n_b) sum_{i in b} ||eps_hat_i - eps*_i||^2` of every molecule, `[B]`.
    #[pyo3(signature = (eps_hat, level, batch, *, energy = None, clean = None, forces = None))]
    #[allow(clippy::too_many_arguments)]
    fn per_molecule(
        &self,
        py: Python<'_>,
        eps_hat: PyTensor,
        level: PyRef<'_, PyNoiseLevel>,
        batch: BatchArg,
        energy: Option<PyObject>,
        clean: Option<PyTensor>,
        forces: Option<PyTensor>,
    ) -> PyResult<PyPerMolecule> {
        let forces = ForcesArg::of(energy, clean, forces)?;
        Ok(PyPerMolecule::of(self.run(py, eps_hat, &level, batch, forces)?))
    }

    /// kT in eV.
    #[getter]
    fn kt(&self) -> f64 {
        self.inner.kt()
    }

    #[getter]
    fn flow(&self) -> PyFlow {
        self.flow
    }

    fn __repr__(&self) -> String {
        format!(
            "ScoreConsistency(kt={}, flow=GradientFlow.{}, checks='{}')",
            self.inner.kt(),
            self.flow.name(),
            checks_name(self.checks)
        )
    }
}

impl PyScoreConsistency {
    fn run(
        &self,
        py: Python<'_>,
        eps_hat: PyTensor,
        level: &PyNoiseLevel,
        batch: BatchArg,
        forces: ForcesArg,
    ) -> PyResult<Computed> {
        let loss = self.inner;
        let level = &level.inner;
        // Force labels need no derivative: `torch.no_grad()` then acts as on any
        // PyTorch loss. The model's forces are derivatives (see `released_with_grad`).
        let labels = matches!(forces, ForcesArg::Labels(_));
        let body = move || {
            let layout = batch.layout()?;
            loss.forward_per_molecule(&eps_hat, &lock(level), forces.lib(), &layout)
        };
        if labels {
            Ok((released(py, body)?, false))
        } else {
            released_with_grad(py, body)
        }
    }
}

// ---------------------------------------------------------------------------
// Diffusion

/// The noise level of each molecule: `R_t = alpha R_0 + sigma eps`.
///
/// `NoiseLevel(alpha, sigma)`: signal and noise scales `[B]` (one float dtype
/// and device, every value positive and finite) of the user's own diffusion
/// (variance preserving: `alpha² + sigma² = 1`).
/// `NoiseLevel.sigma_only(sigma)`: a variance-exploding (EDM-style)
/// `R_sigma = R_0 + sigma eps`, which is `alpha = 1`.
/// The scales are constants (detached).
#[pyclass(module = "physcon", name = "NoiseLevel")]
struct PyNoiseLevel {
    inner: Mutex<pd::NoiseLevel>,
}

#[pymethods]
impl PyNoiseLevel {
    #[new]
    fn new(py: Python<'_>, alpha: PyTensor, sigma: PyTensor) -> PyResult<Self> {
        let inner = released(py, move || pd::NoiseLevel::new(&alpha, &sigma))?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    /// A variance-exploding (sigma-only) level: `R_sigma = R_0 + sigma eps`, `alpha = 1`.
    #[staticmethod]
    fn sigma_only(py: Python<'_>, sigma: PyTensor) -> PyResult<Self> {
        let inner = released(py, move || pd::NoiseLevel::sigma_only(&sigma))?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    /// Signal scales `[B]`.
    #[getter]
    fn alpha(&self) -> PyTensor {
        PyTensor(lock(&self.inner).alpha().shallow_clone())
    }

    /// Noise scales `[B]`.
    #[getter]
    fn sigma(&self) -> PyTensor {
        PyTensor(lock(&self.inner).sigma().shallow_clone())
    }

    /// Steps `[B]` (int64) when a `NoiseSchedule` made the level, else `None`.
    #[getter]
    fn t(&self) -> Option<PyTensor> {
        lock(&self.inner).t().map(|t| PyTensor(t.shallow_clone()))
    }

    fn __repr__(&self) -> String {
        let inner = lock(&self.inner);
        format!(
            "NoiseLevel(num_molecules={}, dtype={:?})",
            inner.alpha().size()[0],
            inner.alpha().kind()
        )
    }
}

#[pyclass(module = "physcon", name = "NoiseSchedule", frozen)]
#[doc = lib_doc!("NoiseSchedule")]
///
/// Python: `NoiseSchedule("cosine", steps=1000, *, s=0.008)` or
/// `NoiseSchedule("linear", steps=1000, *, beta_start=1e-4, beta_end=0.02)`;
/// `schedule.level(t, dtype=torch.float32)` gives the `NoiseLevel` of steps
/// `t` `[B]` (int64 in `1..=T`); `alpha_bar(t)`, `alpha(t)`, `sigma(t)` for one step.
struct PyNoiseSchedule {
    inner: pd::NoiseSchedule,
}

#[pymethods]
impl PyNoiseSchedule {
    #[new]
    #[pyo3(signature = (kind = "cosine", steps = 1000, *, s = 0.008, beta_start = 1e-4, beta_end = 0.02))]
    fn new(kind: &str, steps: i64, s: f64, beta_start: f64, beta_end: f64) -> PyResult<Self> {
        let kind = match kind {
            "cosine" => pd::ScheduleKind::Cosine { s },
            "linear" => pd::ScheduleKind::Linear { beta_start, beta_end },
            _ => {
                return Err(PyValueError::new_err(format!(
                    "`kind`: expected 'cosine' or 'linear', got {kind:?}"
                )))
            }
        };
        Ok(Self {
            inner: pd::NoiseSchedule::new(kind, steps).map_err(py_err)?,
        })
    }

    /// The number of steps T.
    #[getter]
    fn steps(&self) -> i64 {
        self.inner.steps()
    }

    /// `abar_t` for `t` in `0..=T` (`abar_0 = 1`).
    fn alpha_bar(&self, t: i64) -> PyResult<f64> {
        self.inner.alpha_bar(t).map_err(py_err)
    }

    /// `a_t = sqrt(abar_t)`, the signal scale.
    fn alpha(&self, t: i64) -> PyResult<f64> {
        self.inner.alpha(t).map_err(py_err)
    }

    /// `s_t = sqrt(1 - abar_t)`, the noise scale.
    fn sigma(&self, t: i64) -> PyResult<f64> {
        self.inner.sigma(t).map_err(py_err)
    }

    /// The `NoiseLevel` of steps `t` `[B]` (int64 in `1..=T`), as `dtype` on `t`'s device.
    #[pyo3(signature = (t, dtype = None))]
    fn level(&self, py: Python<'_>, t: PyTensor, dtype: Option<&Bound<'_, PyAny>>) -> PyResult<PyNoiseLevel> {
        let kind = kind_of(dtype)?;
        let schedule = &self.inner;
        let level = released(py, move || schedule.level(&t, kind))?;
        Ok(PyNoiseLevel {
            inner: Mutex::new(level),
        })
    }

    fn __repr__(&self) -> String {
        match self.inner.kind() {
            pd::ScheduleKind::Cosine { s } => {
                format!("NoiseSchedule('cosine', steps={}, s={s})", self.inner.steps())
            }
            pd::ScheduleKind::Linear { beta_start, beta_end } => format!(
                "NoiseSchedule('linear', steps={}, beta_start={beta_start}, beta_end={beta_end})",
                self.inner.steps()
            ),
        }
    }
}

/// A `torch.dtype` (floating point) as a libtorch kind; `None` is `torch.float32`.
fn kind_of(dtype: Option<&Bound<'_, PyAny>>) -> PyResult<Kind> {
    let Some(dtype) = dtype else {
        return Ok(Kind::Float);
    };
    match dtype.str()?.to_str()? {
        "torch.float32" => Ok(Kind::Float),
        "torch.float64" => Ok(Kind::Double),
        "torch.float16" => Ok(Kind::Half),
        "torch.bfloat16" => Ok(Kind::BFloat16),
        other => Err(PyTypeError::new_err(format!(
            "`dtype`: expected a floating-point torch.dtype, got {other}"
        ))),
    }
}

/// A noised structure: `x0` (centred), `x_t`, `eps` `[N, 3]` and its `level`.
#[pyclass(module = "physcon", name = "Noised")]
struct PyNoised {
    x0: Mutex<Tensor>,
    x_t: Mutex<Tensor>,
    eps: Mutex<Tensor>,
    level: Py<PyNoiseLevel>,
}

#[pymethods]
impl PyNoised {
    /// The clean structure, centred per molecule, `[N, 3]`.
    #[getter]
    fn x0(&self) -> PyTensor {
        PyTensor(lock(&self.x0).shallow_clone())
    }

    /// The noised structure `R_t = a_t R_0 + s_t eps`, `[N, 3]`.
    #[getter]
    fn x_t(&self) -> PyTensor {
        PyTensor(lock(&self.x_t).shallow_clone())
    }

    /// The centre-of-mass-free noise `eps`, `[N, 3]`: the denoising target.
    #[getter]
    fn eps(&self) -> PyTensor {
        PyTensor(lock(&self.eps).shallow_clone())
    }

    /// The noise level (`t`, `alpha`, `sigma` per molecule).
    #[getter]
    fn level(&self, py: Python<'_>) -> Py<PyNoiseLevel> {
        self.level.clone_ref(py)
    }
}

#[pyfunction]
#[pyo3(signature = (schedule, x0, t, batch, *, eps = None))]
#[doc = lib_doc!("q_sample")]
///
/// Python: `q_sample(schedule, x0, t, batch, *, eps=None)` returns a `Noised`
/// (`.x0`, `.x_t`, `.eps`, `.level`); `t` `[B]` int64 steps; `eps` `[N, 3]`
/// given noise (projected to zero centroid per molecule), else drawn from
/// torch's global generator (`torch.manual_seed`).
fn q_sample(
    py: Python<'_>,
    schedule: PyRef<'_, PyNoiseSchedule>,
    x0: PyTensor,
    t: PyTensor,
    batch: BatchArg,
    eps: Option<PyTensor>,
) -> PyResult<PyNoised> {
    let schedule = &schedule.inner;
    let (noised, level) = released(py, move || {
        let layout = batch.layout()?;
        let noised = match eps {
            Some(eps) => pd::q_sample_with(schedule, &x0, &t, &eps, &layout)?,
            None => pd::q_sample(schedule, &x0, &t, &layout)?,
        };
        // The level again, as an owned value for Python (the library lends its own).
        let level = schedule.level(&t, x0.kind())?;
        Ok((noised, level))
    })?;
    Ok(PyNoised {
        x0: Mutex::new(noised.x0().shallow_clone()),
        x_t: Mutex::new(noised.x_t().shallow_clone()),
        eps: Mutex::new(noised.eps().shallow_clone()),
        level: Py::new(
            py,
            PyNoiseLevel {
                inner: Mutex::new(level),
            },
        )?,
    })
}

// ---------------------------------------------------------------------------
// Energies, forces, metrics

#[pyfunction]
#[pyo3(signature = (model, pos, batch, *, create_graph = false))]
#[doc = lib_doc!("energy_and_forces")]
///
/// Python: `energy_and_forces(model, pos, batch, *, create_graph=False)` returns
/// the tuple `(energy [B], forces [N, 3])`; `model` is any callable
/// `pos -> [B]` energies.
fn energy_and_forces(
    py: Python<'_>,
    model: PyObject,
    pos: PyTensor,
    batch: BatchArg,
    create_graph: bool,
) -> PyResult<(PyTensor, PyTensor)> {
    let model = PyEnergy(model);
    let (out, detach) = released_with_grad(py, move || {
        let layout = batch.layout()?;
        physcon::energy_and_forces(&model, &pos, &layout, create_graph)
    })?;
    Ok((
        PyTensor(detach_if(out.energy, detach)),
        PyTensor(detach_if(out.forces, detach)),
    ))
}

#[pyfunction]
#[doc = lib_doc!("kabsch_rmsd")]
///
/// Python: `kabsch_rmsd(pred, reference, batch)` returns `[B]` (Å).
fn kabsch_rmsd(py: Python<'_>, pred: PyTensor, reference: PyTensor, batch: BatchArg) -> PyResult<PyTensor> {
    let rmsd = released(py, move || {
        let layout = batch.layout()?;
        physcon::metrics::kabsch_rmsd(&pred, &reference, &layout)
    })?;
    Ok(PyTensor(rmsd))
}

#[pyfunction]
#[doc = lib_doc!("energy_gap")]
///
/// Python: `energy_gap(energy, pred, reference, batch)` returns `[B]` (eV).
fn energy_gap(
    py: Python<'_>,
    energy: PyObject,
    pred: PyTensor,
    reference: PyTensor,
    batch: BatchArg,
) -> PyResult<PyTensor> {
    let energy = PyEnergy(energy);
    let gap = released(py, move || {
        let layout = batch.layout()?;
        physcon::metrics::energy_gap(&energy, &pred, &reference, &layout)
    })?;
    Ok(PyTensor(gap))
}

#[pyfunction]
#[pyo3(signature = (pred, target, batch, mask = None))]
#[doc = lib_doc!("energy_mae")]
///
/// Python: `energy_mae(pred, target, batch, mask=None)` returns a scalar (eV).
fn energy_mae(
    py: Python<'_>,
    pred: PyTensor,
    target: PyTensor,
    batch: BatchArg,
    mask: Option<PyTensor>,
) -> PyResult<PyTensor> {
    let mae = released(py, move || {
        let layout = batch.layout()?;
        physcon::metrics::energy_mae(&pred, &target, mask.as_deref(), &layout)
    })?;
    Ok(PyTensor(mae))
}

/// kT in eV at a temperature in kelvin: `k_B T` with `k_B = 8.617333262e-5 eV/K`.
#[pyfunction]
fn kelvin_to_kt(kelvin: f64) -> PyResult<f64> {
    Ok(physcon::Temperature::kelvin(kelvin).map_err(py_err)?.kt())
}

// ---------------------------------------------------------------------------
// Checking a user's energy model

/// The findings of `check_energy_model`: `passed`, `failed` (the names of
/// the failed checks), `findings` (tuples `(check, quantity, worst,
/// tolerance, passed)`), `str(report)` a table, `ensure()` raises
/// `ValueError` naming every failure (else returns the report).
#[pyclass(module = "physcon", name = "ModelReport", frozen)]
struct PyModelReport {
    inner: physcon::testing::ModelReport,
}

#[pymethods]
impl PyModelReport {
    #[getter]
    fn passed(&self) -> bool {
        self.inner.passed()
    }

    #[getter]
    fn failed(&self) -> Vec<&'static str> {
        self.inner.failed().into_iter().map(|c| c.name()).collect()
    }

    #[getter]
    fn findings(&self) -> Vec<(&'static str, &'static str, f64, f64, bool)> {
        self.inner
            .findings
            .iter()
            .map(|f| (f.check.name(), f.quantity, f.worst, f.tolerance, f.passed()))
            .collect()
    }

    fn ensure(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        slf.get().inner.clone().ensure().map_err(py_err)?;
        Ok(slf.clone_ref(py))
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "ModelReport(passed={}, failed={:?})",
            if self.inner.passed() { "True" } else { "False" },
            self.failed()
        )
    }
}

// The library's text speaks of its own Rust batch type; this one is written for Python.
/// Checks an energy model the way NequIP's `model_tests_basic.py` checks its
/// own: symmetries, batching, forces and second derivatives.
///
/// `check_energy_model(model, pos, species, batch, *, bonds=None, bond_orders=None)`
/// returns a `ModelReport` (a model that runs but fails a check is not an
/// error: see `ModelReport.ensure()`). `model(pos, species, batch)` maps a
/// batch (`pos [N, 3]` float64 Å, `species [N]` and `batch [N]` int64) to
/// energies `[B]` (eV), computed from the `pos` it is given with autograd
/// enabled. It is called on rotated (about the origin), shifted, permuted,
/// re-ordered and single-molecule batches; `bonds [E, 2]` and `bond_orders [E]`
/// (int64, pass both or neither) are renumbered with the atoms.
///
/// The checks (`ModelReport.failed` names them): `rotation` (energies
/// invariant, forces equivariant), `translation`, `permutation` (atom order
/// within a molecule), `molecule order`, `isolation` (molecules do not
/// interact), `forces` (`F = -dE/dR` against central differences) and
/// `second order` (Hessian-vector products against differences of the
/// gradient, locally and across short segments: SiLU passes, ReLU does not).
///
/// float64 only (finite differences need its precision); any device. `batch`
/// needs at least two molecules, ideally of different sizes with their atoms
/// interleaved. Cost: about `4 * 3N` model evaluations, half with a double backward.
#[pyfunction]
#[pyo3(signature = (model, pos, species, batch, *, bonds = None, bond_orders = None))]
fn check_energy_model(
    py: Python<'_>,
    model: PyObject,
    pos: PyTensor,
    species: PyTensor,
    batch: PyTensor,
    bonds: Option<PyTensor>,
    bond_orders: Option<PyTensor>,
) -> PyResult<PyModelReport> {
    let model = PyEnergy(model);
    let report = released(py, move || {
        let layout = layout_of(batch.0, None)?;
        let mut mol = MolBatch::new(&pos, &species, layout.batch(), layout.num_molecules())?;
        match (bonds, bond_orders) {
            (Some(index), Some(order)) => mol = mol.with_bonds(&index, &order)?,
            (None, None) => {}
            _ => {
                return Err(Error::InvalidArgument {
                    arg: "bonds",
                    reason: "pass bonds and bond_orders together".into(),
                })
            }
        }
        let call = |b: &MolBatch| {
            model.call(|py| {
                PyTuple::new(
                    py,
                    [
                        PyTensor(b.pos().shallow_clone()),
                        PyTensor(b.species().shallow_clone()),
                        PyTensor(b.layout().batch().shallow_clone()),
                    ],
                )
            })
        };
        physcon::tch::with_grad(|| {
            physcon::testing::check_energy_model(&call, &mol, &physcon::testing::ModelCheck::default())
        })
    })?;
    Ok(PyModelReport { inner: report })
}

// ---------------------------------------------------------------------------
// The module

/// physcon's physical-consistency losses on PyTorch tensors (the native part;
/// import `physcon`, which checks the torch version first).
#[pymodule]
fn _physcon(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBatch>()?;
    m.add_class::<PyFlow>()?;
    m.add_class::<PyPerMolecule>()?;
    m.add_class::<PyEnergyLoss>()?;
    m.add_class::<PyForceLoss>()?;
    m.add_class::<PyDenoisingLoss>()?;
    m.add_class::<PyStationarityLoss>()?;
    m.add_class::<PyEnergyDescentLoss>()?;
    m.add_class::<PyScoreConsistency>()?;
    m.add_class::<PyNoiseLevel>()?;
    m.add_class::<PyNoiseSchedule>()?;
    m.add_class::<PyNoised>()?;
    m.add_class::<PyModelReport>()?;
    m.add_function(wrap_pyfunction!(q_sample, m)?)?;
    m.add_function(wrap_pyfunction!(energy_and_forces, m)?)?;
    m.add_function(wrap_pyfunction!(kabsch_rmsd, m)?)?;
    m.add_function(wrap_pyfunction!(energy_gap, m)?)?;
    m.add_function(wrap_pyfunction!(energy_mae, m)?)?;
    m.add_function(wrap_pyfunction!(kelvin_to_kt, m)?)?;
    m.add_function(wrap_pyfunction!(check_energy_model, m)?)?;
    m.add("KB_EV_PER_K", physcon::units::KB_EV_PER_K)?;
    Ok(())
}
