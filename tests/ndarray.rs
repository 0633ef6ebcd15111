//! ndarray at the boundary: host arrays into batches and results out as
//! arrays, exact in f64 (tensor ⇄ ndarray), any memory layout, and the shape,
//! dtype and non-finite errors of the array entry points. (The example's
//! `.npz` files are read back in its own crate's tests.)

use std::path::Path;

use physcon::array::{atom_vectors, molecule_values};
use physcon::data::{read_extxyz, LabelledBatch};
use physcon::losses::{EnergyLoss, EnergyMetric};
use physcon::ndarray::{array, s, Array1, Array2, ArrayView1, Axis};
use physcon::{BatchLayout, Error, MolBatch, Molecule};
use tch::{Device, Kind, Tensor};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Positions with every bit of an f64 in use (no value is a short decimal).
fn awkward_pos(n: usize) -> Array2<f64> {
    Array2::from_shape_fn((n, 3), |(i, c)| {
        ((i * 3 + c) as f64 + 0.1).sqrt() * std::f64::consts::PI - 2.0
    })
}

#[test]
fn tensor_array_round_trips_are_exact_in_f64() {
    let pos = awkward_pos(7);
    let species = array![6i64, 1, 1, 8, 1, 7, 1];
    let batch = array![0i64, 1, 0, 1, 1, 2, 2];
    let b = MolBatch::from_arrays(
        pos.view(),
        species.view(),
        batch.view(),
        3,
        Kind::Double,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(b.pos().kind(), Kind::Double);
    assert_eq!(atom_vectors(b.pos(), b.layout()).unwrap(), pos);
    assert_eq!(Vec::<i64>::try_from(b.species()).unwrap(), species.to_vec());
    assert_eq!(Vec::<i64>::try_from(b.layout().batch()).unwrap(), batch.to_vec());
    let values = Tensor::from_slice(&[0.1f64, f64::MIN_POSITIVE, -1e300]);
    assert_eq!(
        molecule_values(&values, b.layout()).unwrap().to_vec(),
        Vec::<f64>::try_from(&values).unwrap()
    );
    // f32 results come out widened, not rounded again.
    let narrow = values.to_kind(Kind::Float);
    let widened: Vec<f64> = Vec::<f32>::try_from(&narrow)
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_eq!(molecule_values(&narrow, b.layout()).unwrap().to_vec(), widened);
    // A tensor with a graph converts without touching it.
    let graph = values.set_requires_grad(true) * 1.0;
    assert_eq!(molecule_values(&graph, b.layout()).unwrap()[0], 0.1);
    assert!(graph.requires_grad());
}

#[test]
fn views_of_any_layout_give_the_same_batch() {
    let pos = awkward_pos(5);
    let species = array![8i64, 6, 8, 1, 1];
    let contiguous = Molecule::from_arrays(pos.view(), species.view()).unwrap();
    // The same positions stored as [3, 5] and viewed transposed, and a strided species view.
    let stored = Array2::from_shape_fn((3, 5), |(c, i)| pos[[i, c]]);
    let doubled: Array1<i64> = species.iter().flat_map(|&z| [z, 0]).collect();
    let strided = doubled.slice(s![..;2]);
    assert!(stored.t().as_slice().is_none() && strided.as_slice().is_none());
    let other = Molecule::from_arrays(stored.t(), strided).unwrap();
    assert_eq!(other, contiguous);
    let batch = MolBatch::from_arrays(
        stored.t(),
        strided,
        Array1::zeros(5).view(),
        1,
        Kind::Double,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(atom_vectors(batch.pos(), batch.layout()).unwrap(), pos);
    // The molecule's own view lends its positions without a copy.
    assert_eq!(contiguous.pos_view(), pos);
    assert_eq!(contiguous.pos_view().as_ptr(), contiguous.pos.as_ptr().cast());
}

#[test]
fn from_molecules_is_from_arrays_over_the_stacked_atoms() {
    let a = Molecule::from_arrays(awkward_pos(2).view(), array![1i64, 1].view()).unwrap();
    let b = Molecule::from_arrays(awkward_pos(3).view(), array![8i64, 1, 1].view()).unwrap();
    let batch = MolBatch::from_molecules(&[a.clone(), b.clone()], Kind::Float, Device::Cpu).unwrap();
    let stacked = physcon::ndarray::concatenate(Axis(0), &[a.pos_view(), b.pos_view()]).unwrap();
    let direct = MolBatch::from_arrays(
        stacked.view(),
        array![1i64, 1, 8, 1, 1].view(),
        array![0i64, 0, 1, 1, 1].view(),
        2,
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    assert!(batch.pos().equal(direct.pos()));
    assert!(batch.species().equal(direct.species()));
    assert!(batch.layout().batch().equal(direct.layout().batch()));
}

#[test]
fn frames_lend_positions_and_forces_as_views() {
    let frames = read_extxyz(root().join("tests/fixtures/extxyz/valid_small.extxyz")).unwrap();
    let formic = &frames[0];
    let pos = formic.pos_view();
    assert_eq!(pos.dim(), (5, 3));
    assert_eq!(pos.row(0).to_vec(), formic.pos[0]);
    assert_eq!(pos.as_ptr(), formic.pos.as_ptr().cast());
    let forces = formic.forces_view().unwrap();
    assert_eq!(forces[[4, 1]], -0.45273504);
    assert!(
        frames[1].forces_view().is_none(),
        "the xtb-opt frame has no forces"
    );
}

#[test]
fn labelled_batches_from_arrays_mask_nan_labels() {
    let batch = MolBatch::from_molecules(
        &[
            Molecule::from_arrays(awkward_pos(2).view(), array![1i64, 1].view()).unwrap(),
            Molecule::from_arrays(awkward_pos(3).view(), array![8i64, 1, 1].view()).unwrap(),
        ],
        Kind::Double,
        Device::Cpu,
    )
    .unwrap();
    let mut forces = awkward_pos(5);
    forces.slice_mut(s![..2, ..]).fill(f64::NAN);
    let energy = array![-31.5, f64::NAN];
    let labelled = LabelledBatch::from_arrays(batch, Some(energy.view()), Some(forces.view())).unwrap();
    assert_eq!(
        Vec::<bool>::try_from(&labelled.energy_mask).unwrap(),
        [true, false]
    );
    assert_eq!(
        Vec::<bool>::try_from(&labelled.force_mask).unwrap(),
        [false, true]
    );
    assert_eq!(labelled.energy.double_value(&[0]), -31.5);
    let layout = labelled.batch.layout();
    assert_eq!(
        atom_vectors(&labelled.forces, layout).unwrap().slice(s![2.., ..]),
        forces.slice(s![2.., ..])
    );
    assert_eq!(labelled.mol_ids, ["0", "1"]);
    // Per-molecule losses leave as an array with NaN where the label is missing.
    let pred = Tensor::from_slice(&[-30.5f64, 7.0]);
    let per = EnergyLoss::new(EnergyMetric::Mse)
        .unwrap()
        .forward_per_molecule(&pred, &labelled.energy, Some(&labelled.energy_mask), layout)
        .unwrap();
    let host = per.to_array().unwrap();
    assert_eq!(host[0], 1.0);
    assert!(host[1].is_nan());
    assert_eq!(per.mean().unwrap().double_value(&[]), 1.0);
    // No labels at all.
    let bare = MolBatch::from_arrays(
        awkward_pos(2).view(),
        array![1i64, 1].view(),
        array![0i64, 0].view(),
        1,
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let bare = LabelledBatch::from_arrays(bare, None, None).unwrap();
    assert_eq!(bare.energy.kind(), Kind::Float);
    assert_eq!(Vec::<bool>::try_from(&bare.energy_mask).unwrap(), [false]);
    assert_eq!(Vec::<bool>::try_from(&bare.force_mask).unwrap(), [false]);
}

#[test]
fn array_entry_points_name_the_argument_at_fault() {
    let species = array![1i64, 1];
    let two = awkward_pos(2);
    let shape_of = |r: physcon::Result<Molecule>| match r {
        Err(Error::Shape { arg, got, .. }) => (arg, got),
        other => panic!("expected a shape error, got {other:?}"),
    };
    // Shapes.
    let wide = Array2::<f64>::zeros((2, 4));
    assert_eq!(
        shape_of(Molecule::from_arrays(wide.view(), species.view())),
        ("pos", vec![2, 4])
    );
    assert_eq!(
        shape_of(Molecule::from_arrays(awkward_pos(3).view(), species.view())),
        ("pos", vec![3, 3])
    );
    let none = Array1::<i64>::zeros(0);
    assert_eq!(
        shape_of(Molecule::from_arrays(Array2::zeros((0, 3)).view(), none.view())),
        ("species", vec![0])
    );
    // Values.
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut pos = two.clone();
        pos[[1, 2]] = bad;
        assert!(matches!(
            Molecule::from_arrays(pos.view(), species.view()),
            Err(Error::NonFinite { arg: "pos" })
        ));
    }
    for z in [0i64, 119] {
        assert!(matches!(
            Molecule::from_arrays(two.view(), array![1, z].view()),
            Err(Error::IndexOutOfRange { arg: "species", index, bound: 119 }) if index == z
        ));
    }
    // The batch entry point: dtype of the kind asked for, shapes, finiteness in that kind.
    let batch = array![0i64, 0];
    let from = |pos: &Array2<f64>, batch: ArrayView1<'_, i64>, kind: Kind| {
        MolBatch::from_arrays(pos.view(), species.view(), batch, 1, kind, Device::Cpu)
    };
    assert!(matches!(
        from(&two, batch.view(), Kind::Int64),
        Err(Error::Dtype {
            arg: "kind",
            got: Kind::Int64,
            ..
        })
    ));
    assert!(matches!(
        from(&Array2::zeros((2, 2)), batch.view(), Kind::Double),
        Err(Error::Shape { arg: "pos", .. })
    ));
    assert!(matches!(
        from(&two, array![0i64, 0, 0].view(), Kind::Double),
        Err(Error::Shape { arg: "pos", .. })
    ));
    assert!(matches!(
        from(&two, array![0i64, 1].view(), Kind::Double),
        Err(Error::IndexOutOfRange {
            arg: "batch",
            index: 1,
            bound: 1
        })
    ));
    let mut huge = two.clone();
    huge[[0, 0]] = 1e300;
    assert!(from(&huge, batch.view(), Kind::Double).is_ok());
    assert!(matches!(
        from(&huge, batch.view(), Kind::Float),
        Err(Error::NonFinite { arg: "pos" })
    ));
    // Labels.
    let labelled = |energy: Array1<f64>, forces: Array2<f64>| {
        let b = from(&two, batch.view(), Kind::Double).unwrap();
        LabelledBatch::from_arrays(b, Some(energy.view()), Some(forces.view()))
    };
    assert!(matches!(
        labelled(array![1.0, 2.0], two.clone()),
        Err(Error::Shape { arg: "energy", .. })
    ));
    assert!(matches!(
        labelled(array![f64::INFINITY], two.clone()),
        Err(Error::NonFinite { arg: "energy" })
    ));
    assert!(matches!(
        labelled(array![1.0], Array2::zeros((3, 3))),
        Err(Error::Shape { arg: "forces", .. })
    ));
    let mut half = two.clone();
    half[[0, 1]] = f64::NAN;
    assert!(matches!(
        labelled(array![1.0], half),
        Err(Error::InvalidArgument { arg: "forces", reason }) if reason.contains("molecule 0 has 1 NaN force components of 6")
    ));
    let mut inf = two.clone();
    inf[[1, 1]] = f64::NEG_INFINITY;
    assert!(matches!(
        labelled(array![1.0], inf),
        Err(Error::NonFinite { arg: "forces" })
    ));
    // Results out: float tensors of the documented shapes only.
    let layout = BatchLayout::from_counts(&[2], Device::Cpu).unwrap();
    assert!(matches!(
        molecule_values(&Tensor::from_slice(&[1i64]), &layout),
        Err(Error::Dtype { arg: "values", .. })
    ));
    assert!(matches!(
        molecule_values(&Tensor::from_slice(&[1.0f64, 2.0]), &layout),
        Err(Error::Shape { arg: "values", .. })
    ));
    assert!(matches!(
        atom_vectors(&Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)), &layout),
        Err(Error::Shape { arg: "x", .. })
    ));
}
