//! libtorch's intra-op thread count for `train`, `evaluate` and `predict`.
//!
//! libtorch's CPU kernels split work over OpenMP threads that wait for each
//! other at the end of every operation. While another process holds a core,
//! one of them is descheduled and the others wait until it returns: with 2
//! threads on the 2-core machine, `predict` took 2× longer beside one busy
//! process and 10 to 80× longer beside a build, while 1 thread lost nothing
//! (BENCHMARKS.md, section 5). One thread per two cores leaves room for a
//! neighbour and gives up 25 % when there is none.

use crate::{Error, Result};

/// `--threads`, shared by the subcommands.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Threads {
    /// libtorch's CPU threads (default: OMP_NUM_THREADS when set, else half the cores, at least 1).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Threads {
    /// The thread count: the flag, else `OMP_NUM_THREADS`, else [`default_threads`].
    ///
    /// # Errors
    /// [`Error::Flag`] for `--threads 0`, or an `OMP_NUM_THREADS`
    /// that is not a positive integer (it would otherwise be ignored by us and
    /// read differently by OpenMP).
    pub fn count(&self) -> Result<usize> {
        if let Some(n) = self.threads {
            return if n >= 1 {
                Ok(n)
            } else {
                Err(Error::Flag {
                    flag: "--threads",
                    reason: "must be at least 1".into(),
                })
            };
        }
        match std::env::var("OMP_NUM_THREADS") {
            Ok(text) => from_env(&text),
            Err(_) => Ok(default_threads()),
        }
    }

    /// Sets libtorch's thread count to [`Self::count`].
    ///
    /// # Errors
    /// As [`Self::count`].
    pub fn apply(&self) -> Result<()> {
        let n = self.count()?;
        tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
        Ok(())
    }
}

/// `OMP_NUM_THREADS` as OpenMP reads its first level (`4` or `4,2`).
fn from_env(text: &str) -> Result<usize> {
    text.split(',')
        .next()
        .and_then(|t| t.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .ok_or_else(|| Error::Flag {
            flag: "OMP_NUM_THREADS",
            reason: format!(
                "`{}` is not a positive thread count; unset it or pass --threads",
                physcon::data::excerpt(text)
            ),
        })
}

/// Half the cores this process may use, at least 1.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_environment_then_half_the_cores() {
        assert_eq!(Threads { threads: Some(3) }.count().unwrap(), 3);
        assert!(matches!(
            Threads { threads: Some(0) }.count(),
            Err(Error::Flag {
                flag: "--threads",
                ..
            })
        ));
        assert_eq!(from_env("4").unwrap(), 4);
        assert_eq!(from_env(" 2,1").unwrap(), 2);
        for bad in ["0", "", "two", "-1"] {
            assert!(matches!(
                from_env(bad),
                Err(Error::Flag {
                    flag: "OMP_NUM_THREADS",
                    ..
                })
            ));
        }
        assert!(default_threads() >= 1);
    }
}
