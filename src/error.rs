//! The crate's error type.
//!
//! Every public function that can fail returns [`Result`]. Variants name the
//! argument at fault so a trainer's log says which tensor was wrong.

use std::path::PathBuf;

use tch::{Device, Kind};

/// Result alias used throughout physcon.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in physcon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor has the wrong shape.
    #[error("`{arg}`: expected shape {expected}, got {got:?}")]
    Shape {
        /// The argument at fault.
        arg: &'static str,
        /// The expected shape, in words (e.g. `[N, 3]` with N = 7).
        expected: String,
        /// The shape that was passed.
        got: Vec<i64>,
    },
    /// A tensor has the wrong element type.
    #[error("`{arg}`: expected dtype {expected}, got {got:?}")]
    Dtype {
        /// The argument at fault.
        arg: &'static str,
        /// The expected element type, in words.
        expected: String,
        /// The element type that was passed.
        got: Kind,
    },
    /// Two tensors that must live on one device do not.
    #[error("`{arg}` is on {got:?} but the batch is on {expected:?}")]
    Device {
        /// The argument at fault.
        arg: &'static str,
        /// The device of the batch layout.
        expected: Device,
        /// The device of the argument.
        got: Device,
    },
    /// A tensor holds NaN or an infinity.
    #[error("`{arg}` contains NaN or infinite values")]
    NonFinite {
        /// The argument (or model output) at fault.
        arg: &'static str,
    },
    /// A molecule index in `0..num_molecules` has no atom.
    #[error("molecule {molecule} has no atoms (every index in 0..{num_molecules} needs one)")]
    EmptyMolecule {
        /// The first empty molecule.
        molecule: i64,
        /// The number of molecules the batch declares.
        num_molecules: i64,
    },
    /// An index lies outside its range.
    #[error("`{arg}`: index {index} is outside 0..{bound}")]
    IndexOutOfRange {
        /// The argument at fault.
        arg: &'static str,
        /// The offending index.
        index: i64,
        /// The exclusive upper bound.
        bound: i64,
    },
    /// kT (or a temperature) is not a positive finite number.
    #[error("`{arg}` must be positive and finite, got {value}")]
    NonPositive {
        /// The argument at fault (`kt`, `kelvin`, ...).
        arg: &'static str,
        /// The value that was passed.
        value: f64,
    },
    /// A value is outside what the function accepts, for a reason given in words.
    #[error("`{arg}`: {reason}")]
    InvalidArgument {
        /// The argument at fault.
        arg: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A model output that must be differentiable has no autograd graph.
    ///
    /// libtorch crashes the process when asked to differentiate such a tensor,
    /// so physcon checks first.
    #[error("`{arg}` has no autograd graph: {reason}")]
    NoGraph {
        /// The tensor that should have had a graph.
        arg: &'static str,
        /// What to check.
        reason: &'static str,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A data file is malformed.
    #[error("{}:{line}: {kind}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the fault.
        line: usize,
        /// What is wrong.
        kind: ParseError,
    },
    /// An error reported by libtorch.
    ///
    /// Displayed as the first line of libtorch's message: libtorch appends a
    /// C++ backtrace of several kilobytes that would bury the reason in a log.
    /// The whole text stays available as the error's
    /// [`source`](std::error::Error::source) (which `anyhow`'s `{:#}` prints)
    /// and in `{:?}`.
    #[error("libtorch: {}", first_line(.0))]
    Torch(#[from] tch::TchError),
    /// An [`crate::EnergyModel`] failed with an error of its own (not a physcon
    /// error): physcon passes it through untouched as the source, so a caller
    /// can recover it by downcasting (the Python bindings re-raise a model's
    /// Python exception this way, traceback included).
    #[error("the energy model failed: {0}")]
    Model(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The first non-empty line of a libtorch error: its reason without the backtrace.
fn first_line(err: &tch::TchError) -> String {
    let text = err.to_string();
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// What is wrong with a line of a data file (see [`Error::Parse`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The file ends inside a frame.
    #[error("frame declares {expected} atoms but the file ends after {found}")]
    Truncated {
        /// Atoms the count line declares.
        expected: usize,
        /// Atom lines present.
        found: usize,
    },
    /// The atom-count line is not a non-negative integer.
    #[error("expected an atom count, got `{0}`")]
    AtomCount(String),
    /// An atom line has the wrong number of columns.
    #[error("expected {expected} columns ({properties}), got {got}")]
    Columns {
        /// Columns the `Properties` key implies.
        expected: usize,
        /// Columns present.
        got: usize,
        /// The `Properties` value.
        properties: String,
    },
    /// A chemical symbol that is not an element.
    #[error("unknown element `{0}`")]
    UnknownElement(String),
    /// A field that does not parse as a number.
    #[error("`{field}`: not a number: `{value}`")]
    Number {
        /// The key or column.
        field: String,
        /// The text.
        value: String,
    },
    /// NaN or an infinity where a finite number is required.
    #[error("`{0}` is not finite")]
    NonFinite(String),
    /// A required comment-line key is absent.
    #[error("missing key `{0}`")]
    MissingKey(&'static str),
    /// The comment line or `Properties` cannot be parsed or is unsupported.
    #[error("bad header: {0}")]
    Header(String),
    /// The `bonds` list is malformed.
    #[error("bad bonds: {0}")]
    Bonds(String),
    /// Frames of one `mol_id` disagree on atoms.
    #[error("{0}")]
    Inconsistent(String),
    /// The bytes are not text this reader can take (binary, damaged gzip, not UTF-8).
    #[error("{0}")]
    Content(String),
    /// A record (one molecule) of a structure file is malformed, unsupported or out of range.
    #[error("{0}")]
    Record(String),
}
