//! Logging: per-step metrics as CSV, and a progress bar on the terminal.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};
use physcon::data::write_atomic;
use physcon::losses::LossTerms;

use crate::checkpoint::Checkpoint;
use crate::objective::Arm;
use crate::plan::Term;

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
                Term::ALL.map(Term::name).join(",")
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
        let cells: Vec<String> = Term::ALL.iter().map(|t| cell(t.name())).collect();
        // One write per row: a kill between writes leaves whole rows, never a part.
        let row = format!(
            "{},{},{:.3e},{:.6e},{:.4e},{},{:.4}\n",
            r.arm.name(),
            r.step,
            r.lr,
            r.total,
            r.grad_norm,
            cells.join(","),
            r.seconds
        );
        self.file.write_all(row.as_bytes()).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Cuts a killed run's log back to what its checkpoints hold, before `--resume`
/// appends: the rows of each arm from the step it restarts at (its checkpoint's,
/// or `stage1_steps` for a stage-2 arm not yet checkpointed) are dropped, and
/// so is a row cut short. Checkpoints are found as `<arm>.safetensors` in `out`.
///
/// # Errors
/// [`Error::Io`] for the file system; the errors of reading a checkpoint.
pub fn cut_to_checkpoints(path: &Path, out: &Path, stage1_steps: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let mut restart = Vec::new();
    for arm in Arm::ALL {
        let ckpt = out.join(format!("{}.safetensors", arm.name()));
        let step = if ckpt.exists() {
            Checkpoint::read(&ckpt)?.meta.step
        } else if arm == Arm::Stage1 {
            0
        } else {
            stage1_steps
        };
        restart.push((arm.name(), step));
    }
    let columns = Term::ALL.len() + 6;
    let mut kept = String::new();
    for (k, line) in text.split_inclusive('\n').enumerate() {
        let whole = line.ends_with('\n') && line.split(',').count() == columns;
        let fields: Vec<&str> = line.split(',').collect();
        let before_restart = restart.iter().any(|&(arm, step)| {
            fields[0] == arm
                && fields
                    .get(1)
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|s| s < step)
        });
        if k == 0 || (whole && before_restart) {
            kept.push_str(line);
        }
    }
    Ok(write_atomic(path, kept.as_bytes())?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{save, CheckpointMeta};
    use crate::optim::Adam;
    use crate::settings::{Preset, Settings};

    /// A run killed mid-row in the consistency arm, with checkpoints at stage-1
    /// step 4 and consistency step 6: resume keeps rows 0..4 and 4..6, drops
    /// the rest and the half row, and the rows appended next continue from there.
    #[test]
    fn resume_cuts_the_log_back_to_the_checkpoints() {
        let dir = std::env::temp_dir().join(format!("physcon-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = |arm, step| CheckpointMeta {
            arm,
            step,
            adam_steps: step as i64,
            seed: 0,
            settings: Settings::preset(Preset::Quick).unwrap(),
        };
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _w = vs.root().zeros("w", &[1]);
        let adam = Adam::new(&vs.trainable_variables());
        save(&dir.join("stage1.safetensors"), &vs, &adam, &meta(Arm::Stage1, 4)).unwrap();
        save(
            &dir.join("consistency.safetensors"),
            &vs,
            &adam,
            &meta(Arm::Consistency, 6),
        )
        .unwrap();
        let path = dir.join("metrics.csv");
        drop(Log::open(&path).unwrap());
        let row = |arm: &str, step: u64| format!("{arm},{step},1e-3,1.0,1.0,1,2,,,,0.1\n");
        let mut text = std::fs::read_to_string(&path).unwrap();
        let header = text.clone();
        for step in 0..6 {
            text.push_str(&row("stage1", step));
        }
        for step in 4..8 {
            text.push_str(&row("consistency", step));
        }
        text.push_str("consistency,8,1e-3,1.0");
        std::fs::write(&path, &text).unwrap();
        cut_to_checkpoints(&path, &dir, 4).unwrap();
        let mut want = header;
        for step in 0..4 {
            want.push_str(&row("stage1", step));
        }
        for step in 4..6 {
            want.push_str(&row("consistency", step));
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
