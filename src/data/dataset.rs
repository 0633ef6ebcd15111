use std::collections::HashMap;
use std::path::Path;

use ndarray::{aview2, Array1, Array2, ArrayView1, ArrayView2};
use tch::{Device, Kind, Tensor};

use crate::batch::{MolBatch, Molecule};
use crate::check;
use crate::convert;
use crate::data::extxyz::read_extxyz;
use crate::data::frame::Frame;
use crate::error::{Error, ParseError, Result};

/// Frames with consistent molecules: every frame of one `mol_id` has the same species in the same order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    frames: Vec<Frame>,
}

impl Dataset {
    /// A dataset of the given frames.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when frames of one `mol_id` disagree on species
    /// (count or order) or a frame has no atoms.
    pub fn new(frames: Vec<Frame>) -> Result<Self> {
        check_consistent(&frames).map_err(|(_, reason)| Error::InvalidArgument {
            arg: "frames",
            reason,
        })?;
        Ok(Self { frames })
    }

    /// Reads a dataset from an extended-XYZ file (gzip or not).
    ///
    /// # Errors
    /// Those of [`read_extxyz`]; [`Error::Parse`] for frames of one `mol_id`
    /// that disagree on species, at the first disagreeing frame's header line.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let frames = read_extxyz(path)?;
        check_consistent(&frames).map_err(|(frame, reason)| {
            let line = frames[..frame].iter().map(|f| f.num_atoms() + 2).sum::<usize>() + 1;
            Error::Parse {
                path: path.to_owned(),
                line,
                kind: ParseError::Inconsistent(reason),
            }
        })?;
        Ok(Self { frames })
    }

    /// The frames, in file order.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// No frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The distinct `mol_id`s in order of first appearance.
    pub fn molecule_ids(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.frames
            .iter()
            .map(|f| f.mol_id.as_str())
            .filter(|id| seen.insert(*id))
            .collect()
    }

    /// The frames at one level of theory (e.g. `"mmff"`).
    pub fn with_level(&self, level: &str) -> Dataset {
        Dataset {
            frames: self
                .frames
                .iter()
                .filter(|f| f.level.as_deref() == Some(level))
                .cloned()
                .collect(),
        }
    }

    /// The frames that satisfy `keep`.
    pub fn filter(&self, keep: impl Fn(&Frame) -> bool) -> Dataset {
        Dataset {
            frames: self.frames.iter().filter(|f| keep(f)).cloned().collect(),
        }
    }

    /// Frame indices in batches of `batch_size` frames (molecules), shuffled by
    /// `seed`; the last batch may be smaller. The same seed gives the same batches.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero batch size.
    pub fn batches(&self, batch_size: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
        if batch_size == 0 {
            return Err(Error::InvalidArgument {
                arg: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        Ok(shuffled_indices(self.len(), seed)
            .chunks(batch_size)
            .map(<[usize]>::to_vec)
            .collect())
    }

    /// The frames at `indices` as one labelled batch of `kind` on `device`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for an index past the end; [`Error::InvalidArgument`]
    /// for no indices; the errors of [`MolBatch::from_molecules`].
    pub fn batch(&self, indices: &[usize], kind: Kind, device: Device) -> Result<LabelledBatch> {
        let frames: Vec<&Frame> = indices
            .iter()
            .map(|&i| {
                self.frames.get(i).ok_or(Error::IndexOutOfRange {
                    arg: "indices",
                    index: i as i64,
                    bound: self.len() as i64,
                })
            })
            .collect::<Result<_>>()?;
        LabelledBatch::from_frames(&frames, kind, device)
    }
}

/// `(frame index, reason)` of the first frame that disagrees with an earlier frame of its `mol_id`.
fn check_consistent(frames: &[Frame]) -> std::result::Result<(), (usize, String)> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (k, frame) in frames.iter().enumerate() {
        if frame.species.is_empty() {
            return Err((k, format!("frame {k} (`{}`) has no atoms", frame.mol_id)));
        }
        let earlier = *first.entry(frame.mol_id.as_str()).or_insert(k);
        if frames[earlier].species != frame.species {
            return Err((
                k,
                format!(
                    "frame {k} of `{}` has other species or atom order than frame {earlier}",
                    frame.mol_id
                ),
            ));
        }
    }
    Ok(())
}

/// The train, validation and test splits of a dataset directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    /// Training frames.
    pub train: Dataset,
    /// Validation frames (for tuning).
    pub val: Dataset,
    /// Test frames (for the final numbers only).
    pub test: Dataset,
}

impl Splits {
    /// Reads `train`, `val` and `test` from `dir`, each as `<name>.extxyz.gz` or `<name>.extxyz`.
    ///
    /// # Errors
    /// [`Error::Io`] when a split file is missing; the errors of [`Dataset::read`].
    pub fn read_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| -> Result<Dataset> {
            let gz = dir.join(format!("{name}.extxyz.gz"));
            if gz.exists() {
                Dataset::read(gz)
            } else {
                Dataset::read(dir.join(format!("{name}.extxyz")))
            }
        };
        Ok(Self {
            train: read("train")?,
            val: read("val")?,
            test: read("test")?,
        })
    }
}

/// A batch of frames with its labels and their masks.
#[derive(Debug)]
pub struct LabelledBatch {
    /// Positions, species, layout and bonds.
    pub batch: MolBatch,
    /// Energy labels `[B]` (eV); NaN where absent.
    pub energy: Tensor,
    /// `[B]` bool: the frame has an energy label.
    pub energy_mask: Tensor,
    /// Force labels `[N, 3]` (eV/Å); NaN where absent.
    pub forces: Tensor,
    /// `[B]` bool: the frame has force labels.
    pub force_mask: Tensor,
    /// The frames' `mol_id`s.
    pub mol_ids: Vec<String>,
    /// The frames' levels of theory (empty string where absent).
    pub levels: Vec<String>,
}

impl LabelledBatch {
    /// Stacks frames into a batch of `kind` (a float kind) on `device`.
    ///
    /// # Errors
    /// The errors of [`MolBatch::from_molecules`] and [`LabelledBatch::from_arrays`].
    pub fn from_frames(frames: &[&Frame], kind: Kind, device: Device) -> Result<Self> {
        let molecules: Vec<Molecule> = frames.iter().map(|f| f.molecule()).collect();
        let batch = MolBatch::from_molecules(&molecules, kind, device)?;
        let energy: Array1<f64> = frames.iter().map(|f| f.energy.unwrap_or(f64::NAN)).collect();
        let forces: Vec<[f64; 3]> = frames
            .iter()
            .flat_map(|f| {
                f.forces
                    .as_deref()
                    .map_or_else(|| vec![[f64::NAN; 3]; f.num_atoms()], <[_]>::to_vec)
            })
            .collect();
        Ok(Self {
            mol_ids: frames.iter().map(|f| f.mol_id.clone()).collect(),
            levels: frames
                .iter()
                .map(|f| f.level.clone().unwrap_or_default())
                .collect(),
            ..Self::from_arrays(batch, Some(energy.view()), Some(aview2(&forces)))?
        })
    }

    /// Labels from host arrays for `batch`, in its dtype and on its device.
    ///
    /// NaN marks a missing label: an energy, or every force component of a
    /// molecule; `None` labels no molecule. `mol_ids` are the molecule indices
    /// (`"0"`, `"1"`, ...) and `levels` empty: set the fields to name them.
    ///
    /// # Shapes
    /// `energy: [B]` (eV), `forces: [N, 3]` (eV/Å), in the batch's molecule and
    /// atom order; any memory layout.
    ///
    /// # Errors
    /// [`Error::Shape`] for a label of another shape; [`Error::NonFinite`] for
    /// an infinite label; [`Error::InvalidArgument`] for a molecule with NaN in
    /// some of its force components but not all.
    pub fn from_arrays(
        batch: MolBatch,
        energy: Option<ArrayView1<'_, f64>>,
        forces: Option<ArrayView2<'_, f64>>,
    ) -> Result<Self> {
        let (b, n) = (batch.num_molecules(), batch.num_atoms());
        let energy = energy.map_or_else(|| Array1::from_elem(b as usize, f64::NAN), |e| e.to_owned());
        check::array_shape("energy", energy.shape(), &[b], "[B]")?;
        if energy.iter().any(|e| e.is_infinite()) {
            return Err(Error::NonFinite { arg: "energy" });
        }
        let energy_mask: Vec<bool> = energy.iter().map(|e| !e.is_nan()).collect();
        let forces = forces.map_or_else(|| Array2::from_elem((n as usize, 3), f64::NAN), |f| f.to_owned());
        check::array_shape("forces", forces.shape(), &[n, 3], "[N, 3]")?;
        let force_mask = force_mask(&forces, &batch)?;
        let (kind, device) = (batch.pos().kind(), batch.layout().device());
        Ok(Self {
            energy: convert::tensor(&energy)?.f_to_kind(kind)?.f_to_device(device)?,
            energy_mask: Tensor::from_slice(&energy_mask).f_to_device(device)?,
            forces: convert::tensor(&forces)?.f_to_kind(kind)?.f_to_device(device)?,
            force_mask: Tensor::from_slice(&force_mask).f_to_device(device)?,
            mol_ids: (0..b).map(|m| m.to_string()).collect(),
            levels: vec![String::new(); b as usize],
            batch,
        })
    }
}

/// Which molecules carry force labels: none of their components NaN (all NaN: no labels).
fn force_mask(forces: &Array2<f64>, batch: &MolBatch) -> Result<Vec<bool>> {
    if forces.iter().any(|f| f.is_infinite()) {
        return Err(Error::NonFinite { arg: "forces" });
    }
    let layout = batch.layout();
    let molecule_of = Vec::<i64>::try_from(&layout.batch().f_to_device(Device::Cpu)?)?;
    let mut nan = vec![0i64; layout.counts_host().len()];
    for (row, &m) in forces.rows().into_iter().zip(&molecule_of) {
        nan[m as usize] += row.iter().filter(|f| f.is_nan()).count() as i64;
    }
    nan.iter()
        .zip(layout.counts_host())
        .enumerate()
        .map(|(m, (&nan, &atoms))| match nan {
            0 => Ok(true),
            _ if nan == 3 * atoms => Ok(false),
            _ => Err(Error::InvalidArgument {
                arg: "forces",
                reason: format!(
                    "molecule {m} has {nan} NaN force components of {}: NaN marks a molecule \
                     without force labels, so all of its components or none",
                    3 * atoms
                ),
            }),
        })
        .collect()
}

/// The SplitMix64 finaliser: a bijective mix of 64 bits, for deriving
/// independent seeds from counters (the shuffles here, a trainer's per-step seeds).
pub fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A permutation of `0..n` determined by `seed` (Fisher–Yates over SplitMix64):
/// the same on every platform and version, so runs are reproducible.
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(state)
    };
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    perm
}
