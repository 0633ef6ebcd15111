//! Logging: per-step metrics as CSV, and a progress bar on the terminal.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use physcon::losses::LossTerms;
use physcon::{Error, Result};

use crate::objective::Arm;

/// The loss terms of the CSV's columns, in order.
pub const LOG_TERMS: [&str; 5] = ["energy", "denoising", "force", "optimality", "score"];

/// What one training step logs.
pub struct StepRecord<'a> {
    pub arm: Arm,
    pub step: u64,
    pub lr: f64,
    /// The weighted total loss.
    pub total: f64,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    pub terms: &'a LossTerms,
    /// Wall time of the step.
    pub seconds: f64,
}

/// Metrics per step as CSV.
pub struct Log {
    file: File,
    path: PathBuf,
}

impl Log {
    /// Opens (appends to) `path`, writing the header to a new file.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let fresh = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if fresh {
            writeln!(
                file,
                "arm,step,lr,total,grad_norm,{},seconds",
                LOG_TERMS.join(",")
            )
            .map_err(io)?;
        }
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Appends one step's row.
    pub fn row(&mut self, r: &StepRecord<'_>) -> Result<()> {
        let values = r.terms.breakdown();
        let cell = |name: &str| {
            values
                .iter()
                .find(|t| t.name == name)
                .map(|t| format!("{:.6e}", t.value))
                .unwrap_or_default()
        };
        let cells: Vec<String> = LOG_TERMS.iter().map(|n| cell(n)).collect();
        writeln!(
            self.file,
            "{},{},{:.3e},{:.6e},{:.4e},{},{:.4}",
            r.arm.name(),
            r.step,
            r.lr,
            r.total,
            r.grad_norm,
            cells.join(","),
            r.seconds
        )
        .map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// A progress bar over `len` steps of `arm` for `seed`.
pub fn progress(arm: Arm, seed: u64, len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("{} s{seed}", arm.name()));
    bar
}
