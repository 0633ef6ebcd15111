//! Checkpoints: weights, Adam state, where the run is, and the settings it was
//! trained with, in one safetensors file written atomically.
//!
//! The run's state and settings travel as TOML text in the file's
//! safetensors metadata (key `two_stage`), so `evaluate` and `predict` rebuild
//! the model the checkpoint was trained as, and a resume or a `--preset` that
//! does not match is refused naming the first setting that differs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};
use physcon::data::write_atomic;
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::model::ELEMENTS;
use crate::objective::Arm;
use crate::optim::Adam;
use crate::settings::Settings;

/// The safetensors metadata key holding [`CheckpointMeta`]'s text.
const META_KEY: &str = "two_stage";

/// Where a run stands and what it was trained with.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    pub arm: Arm,
    /// Training steps done (the next step to run).
    pub step: u64,
    /// Adam steps taken.
    pub adam_steps: i64,
    pub seed: u64,
    pub settings: Settings,
}

impl CheckpointMeta {
    /// The meta as TOML: the run's state, the model's element set, then the settings' table.
    ///
    /// # Errors
    /// [`Error::Invalid`] (`seed`) for a number TOML cannot hold (above `i64::MAX`).
    pub fn to_text(&self) -> Result<String> {
        toml::to_string(&MetaText {
            arm: self.arm,
            step: self.step,
            adam_steps: self.adam_steps,
            seed: self.seed,
            elements: ELEMENTS.to_vec(),
            settings: self.settings.clone(),
        })
        .map_err(|e| Error::Invalid {
            name: "seed",
            reason: format!(
                "cannot be written to the checkpoint ({e}); seeds must be at most {}",
                i64::MAX
            ),
        })
    }

    /// Reads [`CheckpointMeta::to_text`]'s TOML back, the settings validated.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the line of a bad, unknown or missing
    /// key, an element set other than the model's, or a setting out of range.
    pub fn from_text(text: &str) -> Result<Self> {
        let meta: MetaText = toml::from_str(text).map_err(|e| Error::Invalid {
            name: "checkpoint",
            reason: e.to_string(),
        })?;
        if meta.elements != ELEMENTS {
            return Err(Error::Invalid {
                name: "checkpoint",
                reason: format!(
                    "written for elements {:?}, the model knows {ELEMENTS:?}",
                    meta.elements
                ),
            });
        }
        meta.settings.validate()?;
        Ok(Self {
            arm: meta.arm,
            step: meta.step,
            adam_steps: meta.adam_steps,
            seed: meta.seed,
            settings: meta.settings,
        })
    }
}

/// [`CheckpointMeta`] as its TOML text holds it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaText {
    arm: Arm,
    step: u64,
    adam_steps: i64,
    seed: u64,
    /// The atomic numbers the model's embedding rows stand for.
    elements: Vec<i64>,
    settings: Settings,
}

/// A tensor's bytes as safetensors writes them.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Bytes {
    fn new(t: &Tensor) -> Result<Self> {
        let t = t.f_contiguous()?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        Ok(Self {
            dtype: Dtype::try_from(t.kind())?,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            data,
        })
    }
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A checkpoint that cannot be used, and why (damaged, of other settings, ...).
fn corrupt(path: &Path, what: &str) -> Error {
    Error::File {
        path: path.to_owned(),
        reason: what.to_owned(),
    }
}

/// Writes the variables of `vs`, Adam's state and `meta` to `path` (through
/// [`write_atomic`]: a killed run leaves the previous checkpoint whole).
pub fn save(path: &Path, vs: &VarStore, adam: &Adam, meta: &CheckpointMeta) -> Result<()> {
    let mut named: Vec<(String, Bytes)> = Vec::new();
    for (k, v) in vs.variables() {
        named.push((format!("model.{k}"), Bytes::new(&v)?));
    }
    for (k, (m, v)) in adam.m.iter().zip(&adam.v).enumerate() {
        named.push((format!("adam.m.{k}"), Bytes::new(m)?));
        named.push((format!("adam.v.{k}"), Bytes::new(v)?));
    }
    let info = HashMap::from([(META_KEY.to_owned(), meta.to_text()?)]);
    let bytes = safetensors::tensor::serialize(named.iter().map(|(k, b)| (k.as_str(), b)), &Some(info))
        .map_err(|e| corrupt(path, &format!("cannot serialise ({e})")))?;
    Ok(write_atomic(path, &bytes)?)
}

/// A checkpoint read back: its metadata and tensors.
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads a checkpoint written by [`save`].
    ///
    /// # Errors
    /// [`Error::Io`] for a missing file; [`Error::File`]
    /// for one that is not a safetensors file or not a two_stage checkpoint.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| corrupt(path, &format!("not a readable safetensors file ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| corrupt(path, &format!("not a readable safetensors file ({e})")))?;
        let text = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| corrupt(path, "not a two_stage checkpoint (no `two_stage` metadata)"))?;
        let meta = CheckpointMeta::from_text(text).map_err(|e| corrupt(path, &e.to_string()))?;
        let tensors = file
            .tensors()
            .into_iter()
            .map(|(name, view)| -> Result<(String, Tensor)> { Ok((name, Tensor::try_from(view)?)) })
            .collect::<Result<_>>()?;
        Ok(Self {
            meta,
            path: path.to_owned(),
            tensors,
        })
    }

    /// Refuses a checkpoint trained with other settings than `expected`, naming the first that differs.
    ///
    /// # Errors
    /// [`Error::File`] naming the checkpoint.
    pub fn check_settings(&self, expected: &Settings) -> Result<()> {
        match self.meta.settings.first_difference(expected) {
            None => Ok(()),
            Some((key, stored, wanted)) => Err(corrupt(
                &self.path,
                &format!(
                    "written with `{key} = {stored}`, but the requested settings have `{key} = {wanted}`"
                ),
            )),
        }
    }

    /// Copies the model's weights into the variables of `vs`.
    ///
    /// # Errors
    /// A variable missing from the file or of another shape.
    pub fn restore_model(&self, vs: &VarStore) -> Result<()> {
        let vars = vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, var) in &vars {
                let src = self.tensor(&format!("model.{name}"))?;
                // A damaged or diverged checkpoint is named here, not later as a NaN output.
                if src.f_isfinite()?.f_all()?.int64_value(&[]) == 0 {
                    return Err(corrupt(
                        &self.path,
                        &format!("weight `{name}` holds NaN or infinite values (a damaged file, or training diverged)"),
                    ));
                }
                if src.size() != var.size() {
                    return Err(corrupt(
                        &self.path,
                        &format!("`{name}` has shape {:?}, the model {:?}", src.size(), var.size()),
                    ));
                }
                var.shallow_clone().f_copy_(src)?;
            }
            Ok(())
        })
    }

    /// Restores Adam's moments and step count.
    ///
    /// # Errors
    /// Missing optimiser state.
    pub fn restore_adam(&self, adam: &mut Adam) -> Result<()> {
        for k in 0..adam.m.len() {
            adam.m[k] = self.tensor(&format!("adam.m.{k}"))?.shallow_clone();
            adam.v[k] = self.tensor(&format!("adam.v.{k}"))?.shallow_clone();
        }
        adam.t = self.meta.adam_steps;
        Ok(())
    }

    fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| corrupt(&self.path, &format!("no tensor `{name}`")))
    }
}
