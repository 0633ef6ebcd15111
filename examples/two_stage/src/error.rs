//! The example's errors: its flags, settings and files named, the library's
//! errors wrapped as they are.
//!
//! The library's [`physcon::Error`] names tensor arguments of its functions; a
//! user of the command line needs the flag, the setting or the file at fault,
//! so the example says those in its own variants.

use std::path::PathBuf;

/// Result alias of the example.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the example.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command-line flag (or the environment variable standing for one) with a value that cannot be used.
    #[error("`{flag}`: {reason}")]
    Flag {
        /// The flag as the user types it (`--samples`), or the variable (`OMP_NUM_THREADS`).
        flag: &'static str,
        /// Why, and the range that is accepted.
        reason: String,
    },
    /// A setting (its key in the settings' TOML) or another value the example's
    /// functions take, out of range.
    #[error("`{name}`: {reason}")]
    Invalid {
        /// The setting's key (`plan.batch_size`) or the argument's name.
        name: &'static str,
        /// Why, and the range that is accepted.
        reason: String,
    },
    /// A file that is not what it should be (a checkpoint of other settings, a damaged one).
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A line of a user's input file.
    #[error("{}:{line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong there.
        reason: String,
    },
    /// The file system.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error of the library, as it said it.
    #[error(transparent)]
    Physcon(#[from] physcon::Error),
}

/// A flag's value refused, with why.
pub(crate) fn flag(flag: &'static str, reason: String) -> Error {
    Error::Flag { flag, reason }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Physcon(e.into())
    }
}

/// The example's error where the library expects its own (an energy model's
/// closure): a library error goes back as itself, the example's as the model's
/// own error ([`physcon::Error::Model`]).
impl From<Error> for physcon::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Physcon(inner) => inner,
            other => physcon::Error::Model(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A library error crosses back into the library as itself; the example's
    /// own becomes the model's error, recoverable by downcasting.
    #[test]
    fn errors_cross_the_library_boundary_without_loss() {
        let lib = physcon::Error::NonFinite { arg: "pos" };
        let back: physcon::Error = Error::from(lib).into();
        assert!(matches!(back, physcon::Error::NonFinite { arg: "pos" }));
        let ours = flag("--samples", "must lie in 1..=1000, got 0".into());
        let shown = ours.to_string();
        assert_eq!(shown, "`--samples`: must lie in 1..=1000, got 0");
        match physcon::Error::from(ours) {
            physcon::Error::Model(inner) => {
                let e = inner.downcast::<Error>().expect("the example's error inside");
                assert!(matches!(
                    *e,
                    Error::Flag {
                        flag: "--samples",
                        ..
                    }
                ));
            }
            other => panic!("{other:?}"),
        }
    }
}
