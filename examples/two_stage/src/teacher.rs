//! How good a teacher the energy model is: its forces and energies against the
//! accurate (GFN2-xTB) labels, on the off-equilibrium frames and at the cheap
//! structures. Score consistency moves the structure model toward these
//! forces, so their error bounds what it can correct.

use crate::Result;
use physcon::data::{Dataset, Frame, LabelledBatch};
use physcon::energy_and_forces;
use tch::{Device, Kind, Tensor};

use crate::batching::batches;
use crate::model::{Graph, Model};

/// Errors of an energy model against accurate labels on a set of frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TeacherAccuracy {
    /// Mean absolute error over force components (eV/Å), frames with force labels.
    pub force_mae: f64,
    /// Root mean square error over force components (eV/Å).
    pub force_rmse: f64,
    /// Mean absolute energy error per frame (eV), frames with energy labels.
    pub energy_mae: f64,
    /// Frames with force labels and with energy labels.
    pub force_frames: usize,
    pub energy_frames: usize,
}

impl Default for TeacherAccuracy {
    /// Nothing measured: every error NaN (a table shows "—").
    fn default() -> Self {
        Self {
            force_mae: f64::NAN,
            force_rmse: f64::NAN,
            energy_mae: f64::NAN,
            force_frames: 0,
            energy_frames: 0,
        }
    }
}

/// The energy model's force and energy errors on `frames` (any levels), in
/// `predict`'s batches (at most 32 frames, bounded pairs), in f32 as training sees them.
///
/// # Errors
/// Those of batching the frames and of the model.
pub fn teacher_accuracy(model: &Model, frames: &Dataset) -> Result<TeacherAccuracy> {
    let (mut abs_f, mut sq_f, mut components) = (0.0f64, 0.0f64, 0usize);
    let (mut abs_e, mut force_frames, mut energy_frames) = (0.0f64, 0usize, 0usize);
    let all: Vec<&Frame> = frames.frames().iter().collect();
    let sizes: Vec<usize> = all.iter().map(|f| f.num_atoms()).collect();
    for range in batches(&sizes) {
        let chunk = &all[range];
        let b = LabelledBatch::from_frames(chunk, Kind::Float, Device::Cpu)?;
        let g = Graph::new(&b.batch, Kind::Float)?;
        let layout = &g.layout;
        let out = energy_and_forces(&model.energy_model(&g), b.batch.pos(), layout, false)?;
        let sum = |t: Tensor| t.double_value(&[]);
        // Unlabelled entries are NaN: select the labelled ones before any arithmetic.
        let atoms = layout.expand(&b.force_mask)?;
        let df = (out.forces.detach() - &b.forces).index_select(0, &atoms.nonzero().squeeze_dim(1));
        abs_f += sum(df.abs().sum(Kind::Double));
        sq_f += sum(df.square().sum(Kind::Double));
        components += df.numel();
        force_frames += chunk.iter().filter(|f| f.forces.is_some()).count();
        let labelled = b.energy_mask.nonzero().squeeze_dim(1);
        let de = (out.energy.detach() - &b.energy).index_select(0, &labelled);
        abs_e += sum(de.abs().sum(Kind::Double));
        energy_frames += de.numel();
    }
    let mean = |total: f64, n: usize| if n == 0 { f64::NAN } else { total / n as f64 };
    Ok(TeacherAccuracy {
        force_mae: mean(abs_f, components),
        force_rmse: mean(sq_f, components).sqrt(),
        energy_mae: mean(abs_e, energy_frames),
        force_frames,
        energy_frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use physcon::array::{atom_vectors, molecule_values};
    use physcon::data::Splits;
    use tch::nn::VarStore;

    /// Labels that are the model's own forces and energies shifted by known
    /// constants give exactly those constants back; unlabelled frames are left out.
    #[test]
    fn errors_against_shifted_own_labels_are_the_shifts() {
        let _rng = crate::rng_lock();
        tch::set_num_threads(1);
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let model = Model::new(&vs.root(), ModelConfig::default(), 1000);
        let splits = Splits::read_dir(crate::repo_root().join("data")).unwrap();
        let mut frames: Vec<Frame> = splits.val.with_level("xtb-perturbed").frames()[..40].to_vec();
        let refs: Vec<&Frame> = frames.iter().collect();
        let b = LabelledBatch::from_frames(&refs, Kind::Float, Device::Cpu).unwrap();
        let g = Graph::new(&b.batch, Kind::Float).unwrap();
        let out = energy_and_forces(&model.energy_model(&g), b.batch.pos(), &g.layout, false).unwrap();
        let (energies, forces) = (
            molecule_values(&out.energy, &g.layout).unwrap(),
            atom_vectors(&out.forces, &g.layout).unwrap(),
        );
        let (df, de) = (0.25, 0.5);
        let mut row = 0;
        for (k, f) in frames.iter_mut().enumerate() {
            let n = f.num_atoms();
            // Alternate signs: a mean of signed errors would hide a sign bug, |.| does not.
            let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
            f.forces = Some(
                (row..row + n)
                    .map(|i| [0, 1, 2].map(|c| forces[[i, c]] + sign * df))
                    .collect(),
            );
            f.energy = Some(energies[k] - sign * de);
            row += n;
        }
        frames[1].forces = None;
        frames[2].energy = None;
        let got = teacher_accuracy(&model, &Dataset::new(frames).unwrap()).unwrap();
        assert_eq!((got.force_frames, got.energy_frames), (39, 39));
        // f32 model, f64 labels: agreement to f32 rounding of eV-scale numbers.
        assert!((got.force_mae - df).abs() < 1e-4, "{got:?}");
        assert!((got.force_rmse - df).abs() < 1e-4, "{got:?}");
        assert!((got.energy_mae - de).abs() < 1e-3, "{got:?}");
        let none = teacher_accuracy(&model, &splits.val.with_level("no-such-level")).unwrap();
        assert!(none.force_mae.is_nan() && none.energy_mae.is_nan());
    }
}
