//! The example's `.npz` files (`predict --npz`, `evaluate --npz`) read back
//! key by key with ndarray-npy: exact in f64, the documented keys, dtypes and shapes.

use std::path::{Path, PathBuf};

use ndarray_npy::NpzReader;
use physcon::data::{read_extxyz, Dataset};
use physcon::diffusion::NoiseSchedule;
use physcon::ndarray::{s, Array1, Array3, Axis};
use tch::Device;
use two_stage::eval::{evaluate, Generation, Guard, MoleculeResults, Structures};
use two_stage::model::Model;
use two_stage::npz::{read_mol_ids, write_evaluation, write_structures};
use two_stage::settings::{Preset, Settings};
use two_stage::Error;

/// The physcon repository, which holds the dataset.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("physcon-npz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The arrays of an `.npz` file, read back with ndarray-npy.
struct Npz(NpzReader<std::fs::File>);

impl Npz {
    fn open(path: &Path) -> Self {
        Self(NpzReader::new(std::fs::File::open(path).unwrap()).unwrap())
    }

    fn get<A: ndarray_npy::ReadableElement, D: physcon::ndarray::Dimension>(
        &mut self,
        name: &str,
    ) -> physcon::ndarray::Array<A, D> {
        self.0.by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

#[test]
fn structures_round_trip_through_npz_exactly() {
    let frames = read_extxyz(root().join("tests/fixtures/extxyz/valid_small.extxyz")).unwrap();
    // Two samples per frame, as `predict` writes them; ids of each width written.
    let long_id = "x".repeat(200);
    let mut samples = Vec::new();
    for (m, frame) in frames.iter().enumerate() {
        for k in 0..2 {
            let mut sample = frame.clone();
            sample.mol_id = [
                frame.mol_id.clone(),
                "ünïcødé-ιδ-分子-".repeat(2),
                long_id.clone(),
                "m".into(),
            ][m]
                .clone();
            sample
                .pos
                .iter_mut()
                .flatten()
                .for_each(|x| *x = (*x + k as f64).exp().sin() / 3.0);
            samples.push(sample);
        }
    }
    for ids in [1, 2, 3, 4] {
        let written = Structures::from_samples(&samples[..2 * ids], 2).unwrap();
        let path = scratch(&format!("structures-{ids}.npz"));
        write_structures(&path, &written).unwrap();
        let mut npz = Npz::open(&path);
        let positions: Array3<f64> = npz.get("positions");
        let read = Structures {
            mol_ids: read_mol_ids(&mut npz.0).unwrap(),
            species: npz.get("species"),
            batch: npz.get("batch"),
            positions,
        };
        assert_eq!(read, written);
        assert_eq!(npz.0.len(), 4);
        std::fs::remove_file(&path).unwrap();
    }
    let all = Structures::from_samples(&samples, 2).unwrap();
    assert_eq!(all.positions.dim(), (2, 28, 3));
    assert_eq!(all.positions.slice(s![1, 10..19, ..]), samples[5].pos_view());
    assert_eq!(
        all.batch.to_vec(),
        [[0i64; 5], [1; 5]]
            .concat()
            .into_iter()
            .chain([2; 9])
            .chain([3; 9])
            .collect::<Vec<_>>()
    );
    assert!(matches!(
        Structures::from_samples(&samples[..3], 2),
        Err(Error::Invalid { name: "frames", .. })
    ));
    // Past the widest id the file can hold: refused, nothing written.
    let mut too_long = Structures::from_samples(&samples[..2], 2).unwrap();
    too_long.mol_ids[0] = "y".repeat(257);
    let path = scratch("too-long.npz");
    assert!(matches!(
        write_structures(&path, &too_long),
        Err(Error::Invalid { name: "mol_id", .. })
    ));
    assert!(!path.exists());
}

/// `evaluate`'s per-molecule results (an untrained model: the numbers need not
/// be good, only written and read back exactly), over two chunks of molecules.
#[test]
fn evaluation_round_trips_through_npz_exactly() {
    let _rng = physcon::testing::rng_lock();
    tch::set_num_threads(1);
    let val = Dataset::read(root().join("data/val.extxyz.gz")).unwrap();
    let keep: Vec<String> = val
        .molecule_ids()
        .into_iter()
        .take(40)
        .map(str::to_owned)
        .collect();
    let split = val.filter(|f| keep.contains(&f.mol_id));
    let settings = Settings::preset(Preset::Quick).unwrap();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model = Model::new(&vs.root(), settings.model, settings.diffusion_steps);
    let schedule = NoiseSchedule::cosine(settings.diffusion_steps).unwrap();
    let how = Generation::Refine {
        start: 10,
        steps: 2,
        guard: Guard::Off,
    };
    let e = evaluate(&model, &split, 3, how, &schedule, 0).unwrap();
    let r = &e.per_molecule;
    let (m, n) = (r.rmsd.nrows(), r.generated.species.len());
    assert!(m > 32, "two chunks of molecules, {m}");
    assert_eq!(r.generated.positions.dim(), (3, n, 3));
    assert_eq!(r.rmsd.dim(), (m, 3));
    assert_eq!(*r.generated.batch.last().unwrap(), m as i64 - 1);
    // The scores summarise these arrays.
    assert_eq!(e.model.molecules, m);
    let mean = |a: &Array1<f64>| a.sum() / a.len() as f64;
    assert!((e.model.rmsd_mean - mean(&r.rmsd.mean_axis(Axis(1)).unwrap())).abs() < 1e-12);
    assert!((e.baseline.egap - mean(&r.baseline_egap)).abs() < 1e-12);
    // The first molecule's atoms and minimum: the f32 batch's values, widened exactly.
    let minimum = split
        .frames()
        .iter()
        .find(|f| f.mol_id == r.generated.mol_ids[0] && f.level.as_deref() == Some("xtb-opt"))
        .unwrap();
    let atoms = minimum.num_atoms();
    assert_eq!(r.generated.species.slice(s![..atoms]).to_vec(), minimum.species);
    let widened = minimum.pos_view().mapv(|x| f64::from(x as f32));
    assert_eq!(r.reference.slice(s![..atoms, ..]), widened);

    let path = scratch("evaluation.npz");
    write_evaluation(&path, r).unwrap();
    let mut npz = Npz::open(&path);
    let generated = Structures {
        mol_ids: read_mol_ids(&mut npz.0).unwrap(),
        species: npz.get("species"),
        batch: npz.get("batch"),
        positions: npz.get("positions"),
    };
    let read = MoleculeResults {
        generated,
        reference: npz.get("reference_positions"),
        rmsd: npz.get("rmsd"),
        egap: npz.get("egap"),
        baseline_rmsd: npz.get("baseline_rmsd"),
        baseline_egap: npz.get("baseline_egap"),
        energy_ref: npz.get("energy_ref"),
    };
    assert_eq!(&read, r);
    assert_eq!(npz.0.len(), 10);
    // The f32 model's values, widened: exactly what the tensors held.
    assert_eq!(r.rmsd.mapv(|x| f64::from(x as f32)), r.rmsd);
    std::fs::remove_file(&path).unwrap();
}
