//! Metrics: Kabsch RMSD (checked against Horn's quaternion method computed
//! independently on the host), energy gap and energy MAE.

mod common;

use physcon::metrics::{energy_gap, energy_mae, kabsch_rmsd};
use physcon::testing::{gradcheck, GradcheckOptions, PairEnergy, PairPotential};
use physcon::{BatchLayout, Error, Result};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

use common::{batch_from_counts, layout_of, single_thread, vals};

type Mat3 = [[f64; 3]; 3];

fn pos_tensor(pos: &[[f64; 3]]) -> Tensor {
    let flat: Vec<f64> = pos.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).reshape([-1, 3])
}

/// The proper rotation of a (not necessarily normalised, non-zero) quaternion `(w, x, y, z)`.
fn rotation(q: [f64; 4]) -> Mat3 {
    let m = Vec::<f64>::try_from(physcon::testing::rotation(q).unwrap().reshape([-1])).unwrap();
    [[m[0], m[1], m[2]], [m[3], m[4], m[5]], [m[6], m[7], m[8]]]
}

fn apply(r: &Mat3, p: [f64; 3], shift: [f64; 3]) -> [f64; 3] {
    let mut out = shift;
    for (i, o) in out.iter_mut().enumerate() {
        *o += r[i][0] * p[0] + r[i][1] * p[1] + r[i][2] * p[2];
    }
    out
}

/// Each molecule moved by its own rotation and translation.
fn rigid_motion(pos: &[[f64; 3]], batch: &[i64], quats: &[[f64; 4]], shifts: &[[f64; 3]]) -> Vec<[f64; 3]> {
    pos.iter()
        .zip(batch)
        .map(|(&p, &m)| apply(&rotation(quats[m as usize]), p, shifts[m as usize]))
        .collect()
}

/// Eigenvalues of a symmetric 4x4 matrix (cyclic Jacobi).
fn sym_eigenvalues(mut a: [[f64; 4]; 4]) -> [f64; 4] {
    let scale: f64 = a.iter().flatten().map(|v| v * v).sum::<f64>().max(1e-300);
    for _ in 0..100 {
        let off: f64 = (0..4)
            .flat_map(|i| (0..4).map(move |j| (i, j)))
            .filter(|(i, j)| i != j)
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-32 * scale {
            break;
        }
        for p in 0..4 {
            for q in p + 1..4 {
                if a[p][q] == 0.0 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (row_p, row_q) = (a[p], a[q]);
                for k in 0..4 {
                    a[p][k] = c * row_p[k] - s * row_q[k];
                    a[q][k] = s * row_p[k] + c * row_q[k];
                }
            }
        }
    }
    [a[0][0], a[1][1], a[2][2], a[3][3]]
}

fn centred(pos: &[[f64; 3]]) -> Vec<[f64; 3]> {
    let n = pos.len() as f64;
    let mut c = [0.0; 3];
    for p in pos {
        for k in 0..3 {
            c[k] += p[k] / n;
        }
    }
    pos.iter()
        .map(|p| [p[0] - c[0], p[1] - c[1], p[2] - c[2]])
        .collect()
}

/// Minimum mean squared deviation over proper rotations, by Horn's quaternion method
/// (largest eigenvalue of the 4x4 key matrix), for one molecule.
fn horn_msd(pred: &[[f64; 3]], reference: &[[f64; 3]]) -> f64 {
    let (p, q) = (centred(pred), centred(reference));
    let mut s = [[0.0; 3]; 3];
    for (a, b) in p.iter().zip(&q) {
        for i in 0..3 {
            for j in 0..3 {
                s[i][j] += a[i] * b[j];
            }
        }
    }
    let [[sxx, sxy, sxz], [syx, syy, syz], [szx, szy, szz]] = s;
    let key = [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
    ];
    let lambda = sym_eigenvalues(key).into_iter().fold(f64::NEG_INFINITY, f64::max);
    let norms: f64 = p.iter().chain(&q).flatten().map(|v| v * v).sum();
    ((norms - 2.0 * lambda) / pred.len() as f64).max(0.0)
}

fn molecule(pos: &[[f64; 3]], batch: &[i64], m: i64) -> Vec<[f64; 3]> {
    pos.iter()
        .zip(batch)
        .filter(|(_, &b)| b == m)
        .map(|(p, _)| *p)
        .collect()
}

/// A shuffled batch of 1..=4 molecules of 1..=12 atoms with coordinates,
/// one rotation (quaternion) and one translation per molecule.
#[allow(clippy::type_complexity)]
fn molecules() -> impl Strategy<Value = (Vec<i64>, Vec<[f64; 3]>, Vec<[f64; 4]>, Vec<[f64; 3]>)> {
    prop::collection::vec(1i64..=12, 1..=4).prop_flat_map(|counts| {
        let n = counts.iter().sum::<i64>() as usize;
        let b = counts.len();
        let quat = prop::array::uniform4(-1.0f64..1.0).prop_filter("non-zero quaternion", |q| {
            q.iter().map(|v| v * v).sum::<f64>() > 1e-2
        });
        (
            Just(batch_from_counts(&counts)).prop_shuffle(),
            prop::collection::vec(prop::array::uniform3(-3.0f64..3.0), n),
            prop::collection::vec(quat, b),
            prop::collection::vec(prop::array::uniform3(-10.0f64..10.0), b),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn rmsd_is_zero_for_rigid_copies((batch, pos, quats, shifts) in molecules()) {
        single_thread();
        let layout = layout_of(&batch);
        let moved = rigid_motion(&pos, &batch, &quats, &shifts);
        let rmsd = vals(&kabsch_rmsd(&pos_tensor(&moved), &pos_tensor(&pos), &layout).unwrap());
        prop_assert_eq!(rmsd.len(), quats.len());
        prop_assert!(rmsd.iter().all(|r| *r <= 1e-10), "{:?}", rmsd);
        let back = vals(&kabsch_rmsd(&pos_tensor(&pos), &pos_tensor(&moved), &layout).unwrap());
        prop_assert!(back.iter().all(|r| *r <= 1e-10), "{:?}", back);
        // At RMSD 0 the gradient is exactly 0, for either argument.
        let (_, grad) = rmsd_grad(&pos_tensor(&moved), &pos_tensor(&pos), &layout).unwrap();
        prop_assert!(vals(&grad).iter().all(|g| *g == 0.0), "{:?}", vals(&grad));
        let leaf = pos_tensor(&pos).set_requires_grad(true);
        let r = kabsch_rmsd(&pos_tensor(&moved), &leaf, &layout).unwrap().sum(Kind::Double);
        prop_assert!(r.requires_grad());
        let g = Tensor::run_backward(&[r], &[&leaf], false, false).pop().unwrap();
        prop_assert!(vals(&g).iter().all(|g| *g == 0.0), "{:?}", vals(&g));
    }

    #[test]
    fn rmsd_matches_horn_and_is_symmetric((batch, pos, quats, shifts) in molecules(), other in prop::collection::vec(prop::array::uniform3(-3.0f64..3.0), 48)) {
        single_thread();
        let layout = layout_of(&batch);
        let reference: Vec<[f64; 3]> = other[..pos.len()].to_vec();
        let rmsd = vals(&kabsch_rmsd(&pos_tensor(&pos), &pos_tensor(&reference), &layout).unwrap());
        let swapped = vals(&kabsch_rmsd(&pos_tensor(&reference), &pos_tensor(&pos), &layout).unwrap());
        // Moving either structure rigidly changes nothing.
        let moved = rigid_motion(&pos, &batch, &quats, &shifts);
        let invariant = vals(&kabsch_rmsd(&pos_tensor(&moved), &pos_tensor(&reference), &layout).unwrap());
        for m in 0..quats.len() {
            let (p, q) = (molecule(&pos, &batch, m as i64), molecule(&reference, &batch, m as i64));
            let msd = horn_msd(&p, &q);
            let scale: f64 = centred(&p).iter().chain(&centred(&q)).flatten().map(|v| v * v).sum::<f64>() / p.len() as f64;
            prop_assert!((rmsd[m].powi(2) - msd).abs() <= 1e-10 * scale.max(1.0), "molecule {}: kabsch {} horn {}", m, rmsd[m], msd.sqrt());
            prop_assert!((rmsd[m] - swapped[m]).abs() <= 1e-10, "{} vs {}", rmsd[m], swapped[m]);
            prop_assert!((rmsd[m] - invariant[m]).abs() <= 1e-9, "{} vs {}", rmsd[m], invariant[m]);
        }
    }
}

#[test]
fn rmsd_by_hand() -> Result<()> {
    single_thread();
    // Two atoms at +-1 versus +-2 on x: each is 1 Å off after superposition.
    let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
    let a = pos_tensor(&[[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]);
    let b = pos_tensor(&[[-2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]);
    assert!((kabsch_rmsd(&a, &b, &layout)?.double_value(&[0]) - 1.0).abs() < 1e-12);
    // The same with the reference rotated and shifted: still 1.
    let q = rotation([0.3, -0.5, 0.8, 0.1]);
    let b_moved: Vec<[f64; 3]> = [[-2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
        .into_iter()
        .map(|p| apply(&q, p, [1.0, 2.0, 3.0]))
        .collect();
    assert!((kabsch_rmsd(&a, &pos_tensor(&b_moved), &layout)?.double_value(&[0]) - 1.0).abs() < 1e-12);

    // A cross (+-1 on x and y) against a rhombus (+-1 on x, +-2 on y), rotated and shifted.
    // For a rotation by theta in the plane, sum_i q_i . R p_i = 6 cos(theta), at most 6, so
    // msd = (|p|^2 + |q|^2 - 2 * 6) / 4 = (4 + 10 - 12) / 4 = 1/2.
    let layout4 = BatchLayout::from_counts(&[4], Device::Cpu)?;
    let cross = [
        [1.0, 0.0, 0.0],
        [-1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, -1.0, 0.0],
    ];
    let rhombus = [
        [1.0, 0.0, 0.0],
        [-1.0, 0.0, 0.0],
        [0.0, 2.0, 0.0],
        [0.0, -2.0, 0.0],
    ];
    let q = rotation([0.9, 0.2, -0.4, 0.7]);
    let rhombus_moved: Vec<[f64; 3]> = rhombus.iter().map(|&p| apply(&q, p, [-4.0, 0.5, 2.0])).collect();
    let r = kabsch_rmsd(&pos_tensor(&cross), &pos_tensor(&rhombus_moved), &layout4)?.double_value(&[0]);
    assert!((r - 0.5f64.sqrt()).abs() < 1e-12, "{r}");

    // Linear: three atoms spaced 1 Å against three spaced 2 Å, rotated: sqrt(2/3).
    let layout3 = BatchLayout::from_counts(&[3], Device::Cpu)?;
    let short = [[-1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]];
    let long: Vec<[f64; 3]> = [[-2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
        .into_iter()
        .map(|p| apply(&rotation([0.2, 0.9, 0.3, -0.1]), p, [0.0, 1.0, 0.0]))
        .collect();
    let r = kabsch_rmsd(&pos_tensor(&short), &pos_tensor(&long), &layout3)?.double_value(&[0]);
    assert!((r - (2.0f64 / 3.0).sqrt()).abs() < 1e-12, "{r}");
    Ok(())
}

#[test]
fn rmsd_of_planar_and_linear_molecules() -> Result<()> {
    single_thread();
    // A planar hexagon with unequal spokes (in z = 0) and a linear chain with unequal bonds.
    let planar: Vec<[f64; 3]> = (0..6)
        .map(|k| {
            let (s, c) = (k as f64 * std::f64::consts::FRAC_PI_3).sin_cos();
            let r = 1.4 + 0.1 * k as f64;
            [r * c, r * s, 0.0]
        })
        .collect();
    let linear = [
        [0.0, 0.0, -1.3],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 1.1],
        [0.0, 0.0, 2.6],
    ];
    let layout = BatchLayout::from_counts(&[6, 4], Device::Cpu)?;
    let reference: Vec<[f64; 3]> = planar.iter().chain(&linear).copied().collect();
    for quat in [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        [0.5, 0.5, -0.5, 0.5],
        [0.1, 0.7, -0.2, 0.4],
    ] {
        let batch = [0i64, 0, 0, 0, 0, 0, 1, 1, 1, 1];
        let moved = rigid_motion(
            &reference,
            &batch,
            &[quat, quat],
            &[[1.0, -2.0, 0.5], [3.0, 3.0, 3.0]],
        );
        let r = vals(&kabsch_rmsd(
            &pos_tensor(&moved),
            &pos_tensor(&reference),
            &layout,
        )?);
        assert!(r.iter().all(|v| *v <= 1e-10), "{quat:?}: {r:?}");
    }
    // The mirror image of a planar molecule is a rotated copy (a flip about an in-plane axis),
    // so the proper-rotation RMSD is 0: the degenerate third singular vector must be flipped.
    let mirrored: Vec<[f64; 3]> = reference.iter().map(|p| [-p[0], p[1], p[2]]).collect();
    let r = vals(&kabsch_rmsd(
        &pos_tensor(&mirrored),
        &pos_tensor(&reference),
        &layout,
    )?);
    assert!(r.iter().all(|v| *v <= 1e-10), "{r:?}");
    // Planar and linear, perturbed: agrees with Horn's method.
    let bent: Vec<[f64; 3]> = reference
        .iter()
        .enumerate()
        .map(|(i, p)| {
            [
                p[0] + 0.1 * (i as f64).sin(),
                p[1] - 0.05 * i as f64,
                p[2] + 0.02 * (i % 3) as f64,
            ]
        })
        .collect();
    let r = vals(&kabsch_rmsd(
        &pos_tensor(&bent),
        &pos_tensor(&reference),
        &layout,
    )?);
    let batch = [0i64, 0, 0, 0, 0, 0, 1, 1, 1, 1];
    for m in 0..2 {
        let msd = horn_msd(&molecule(&bent, &batch, m), &molecule(&reference, &batch, m));
        assert!(r[m as usize] > 1e-3);
        assert!(
            (r[m as usize].powi(2) - msd).abs() < 1e-12,
            "{} vs {}",
            r[m as usize],
            msd.sqrt()
        );
    }
    Ok(())
}

/// A chiral centre: four different substituents on a distorted tetrahedron.
fn chiral() -> Vec<[f64; 3]> {
    vec![
        [0.0, 0.0, 0.0],
        [1.1, 0.0, 0.0],
        [-0.4, 1.4, 0.0],
        [-0.5, -0.7, 1.2],
        [-0.6, -0.8, -1.6],
    ]
}

#[test]
fn mirror_image_of_chiral_molecule_is_not_superposable() -> Result<()> {
    single_thread();
    let layout = BatchLayout::from_counts(&[5], Device::Cpu)?;
    let original = chiral();
    let mirror: Vec<[f64; 3]> = original.iter().map(|p| [-p[0], p[1], p[2]]).collect();
    let moved_mirror: Vec<[f64; 3]> = mirror
        .iter()
        .map(|&p| apply(&rotation([0.4, 0.1, 0.8, -0.3]), p, [2.0, 0.0, -1.0]))
        .collect();
    let proper = kabsch_rmsd(&pos_tensor(&moved_mirror), &pos_tensor(&original), &layout)?.double_value(&[0]);
    assert!(proper > 0.1, "mirror image superposed: {proper}");
    let msd = horn_msd(&moved_mirror, &original);
    assert!(
        (proper.powi(2) - msd).abs() < 1e-12,
        "{proper} vs horn {}",
        msd.sqrt()
    );
    // Allowing the improper operation (reflecting back) superposes it exactly.
    let reflected_back: Vec<[f64; 3]> = moved_mirror.iter().map(|p| [-p[0], p[1], p[2]]).collect();
    let improper =
        kabsch_rmsd(&pos_tensor(&reflected_back), &pos_tensor(&original), &layout)?.double_value(&[0]);
    assert!(improper <= 1e-10, "{improper}");
    Ok(())
}

fn rmsd_grad(pred: &Tensor, reference: &Tensor, layout: &BatchLayout) -> Result<(Vec<f64>, Tensor)> {
    let leaf = pred.detach().set_requires_grad(true);
    let rmsd = kabsch_rmsd(&leaf, reference, layout)?;
    assert!(rmsd.requires_grad());
    let grad = Tensor::run_backward(&[rmsd.sum(Kind::Double)], &[&leaf], false, false)
        .pop()
        .expect("one gradient");
    Ok((vals(&rmsd), grad))
}

#[test]
fn gradient_at_zero_rmsd_is_zero_not_nan() -> Result<()> {
    single_thread();
    let batch = [1i64, 0, 1, 1, 0, 1, 0, 2];
    let layout = layout_of(&batch);
    let reference: Vec<[f64; 3]> = (0..8)
        .map(|i| {
            let x = i as f64;
            [(0.7 * x).sin() * 2.0, (1.3 * x).cos(), 0.4 * x - 1.0]
        })
        .collect();
    let quats = [[0.3, 0.1, -0.9, 0.2], [1.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.9]];
    let shifts = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-5.0, 1.0, 0.0]];
    let rotated = rigid_motion(&reference, &batch, &quats, &shifts);
    for pred in [&reference, &rotated] {
        let (rmsd, grad) = rmsd_grad(&pos_tensor(pred), &pos_tensor(&reference), &layout)?;
        assert!(rmsd.iter().all(|r| *r <= 1e-10), "{rmsd:?}");
        let g = vals(&grad);
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert!(g.iter().all(|v| *v == 0.0), "{g:?}");
    }
    Ok(())
}

#[test]
fn single_atom_molecule_gives_zero() -> Result<()> {
    single_thread();
    let layout = layout_of(&[0, 1, 0, 2, 0]);
    let pred = pos_tensor(&[
        [0.0, 0.0, 0.0],
        [5.0, 5.0, 5.0],
        [1.0, 0.0, 0.0],
        [-3.0, 2.0, 1.0],
        [0.0, 2.0, 0.0],
    ]);
    let reference = pos_tensor(&[
        [0.0, 0.0, 0.0],
        [1.0, 2.0, 3.0],
        [0.0, 1.5, 0.0],
        [7.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
    ]);
    let (rmsd, grad) = rmsd_grad(&pred, &reference, &layout)?;
    assert_eq!(rmsd[1], 0.0);
    assert_eq!(rmsd[2], 0.0);
    assert!(rmsd[0] > 0.1);
    let g = vals(&grad);
    assert!(g.iter().all(|v| v.is_finite()));
    assert!(g[3..6].iter().chain(&g[9..12]).all(|v| *v == 0.0), "{g:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Random molecules of 3..=6 atoms, far from any superposition, in a shuffled batch.
    #[test]
    fn rmsd_gradient_matches_finite_differences(
        batch in prop::collection::vec(3i64..=6, 1..=3).prop_flat_map(|c| Just(batch_from_counts(&c)).prop_shuffle()),
        coords in prop::collection::vec(prop::array::uniform3(-2.0f64..2.0), 36),
    ) {
        single_thread();
        let layout = layout_of(&batch);
        let n = batch.len();
        let pred = pos_tensor(&coords[..n]);
        let reference = pos_tensor(&coords[18..18 + n]);
        let rmsd = vals(&kabsch_rmsd(&pred, &reference, &layout).unwrap());
        // Non-degenerate: clearly non-zero RMSD (the minimum is smooth there).
        prop_assume!(rmsd.iter().all(|r| *r > 0.2));
        let f = |xs: &[Tensor]| kabsch_rmsd(&xs[0], &xs[1], &layout).map(|r| r.sum(Kind::Double));
        let options = GradcheckOptions { eps: 1e-6, atol: 1e-6, rtol: 1e-5 };
        let report = gradcheck(f, &[pred, reference], options).unwrap();
        prop_assert!(report.passed(), "{}", report);
    }
}

#[test]
fn rmsd_in_f32_and_bad_input() -> Result<()> {
    single_thread();
    let layout = BatchLayout::from_counts(&[5], Device::Cpu)?;
    let original = pos_tensor(&chiral());
    let moved: Vec<[f64; 3]> = chiral()
        .into_iter()
        .map(|p| apply(&rotation([0.1, 0.4, 0.4, 0.8]), p, [1.0, 1.0, 1.0]))
        .collect();
    let r = kabsch_rmsd(
        &pos_tensor(&moved).to_kind(Kind::Float),
        &original.to_kind(Kind::Float),
        &layout,
    )?;
    assert_eq!(r.kind(), Kind::Float);
    assert!(r.double_value(&[0]) < 1e-5);
    assert!(matches!(
        kabsch_rmsd(&pos_tensor(&moved), &original.to_kind(Kind::Float), &layout),
        Err(Error::Dtype { arg: "reference", .. })
    ));
    assert!(matches!(
        kabsch_rmsd(&original.narrow(0, 0, 4), &original, &layout),
        Err(Error::Shape { arg: "pred", .. })
    ));
    assert!(matches!(
        kabsch_rmsd(&original, &(&original * f64::NAN), &layout),
        Err(Error::NonFinite { arg: "reference" })
    ));
    Ok(())
}

/// Pair energy summed on the host from the closed-form potential.
fn host_pair_energy(potential: &PairPotential, pos: &[[f64; 3]], batch: &[i64], b: usize) -> Vec<f64> {
    let mut e = vec![0.0; b];
    for i in 0..pos.len() {
        for j in i + 1..pos.len() {
            if batch[i] == batch[j] {
                let r = (0..3)
                    .map(|k| (pos[i][k] - pos[j][k]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                e[batch[i] as usize] += potential.derivatives(r)[0];
            }
        }
    }
    e
}

#[test]
fn energy_gap_is_the_energy_difference_without_graph() -> Result<()> {
    single_thread();
    let batch = [2i64, 0, 1, 0, 2, 1, 0, 2, 3];
    let layout = layout_of(&batch);
    let potential = PairPotential::Morse {
        d: 4.0,
        a: 2.0,
        r0: 1.1,
    };
    let energy = PairEnergy::new(potential, &layout)?;
    let pred: Vec<[f64; 3]> = (0..9)
        .map(|i| {
            let x = i as f64;
            [x * 0.9, (x * 1.7).sin(), (x * 0.3).cos() * 1.2]
        })
        .collect();
    let reference: Vec<[f64; 3]> = pred
        .iter()
        .map(|p| [p[0] * 1.05, p[1] + 0.1, p[2] - 0.2])
        .collect();
    let pred_t = pos_tensor(&pred).set_requires_grad(true);
    let gap = energy_gap(&energy, &pred_t, &pos_tensor(&reference), &layout)?;
    assert!(!gap.requires_grad());
    assert_eq!(gap.size(), vec![4]);
    let (e_pred, e_ref) = (
        host_pair_energy(&potential, &pred, &batch, 4),
        host_pair_energy(&potential, &reference, &batch, 4),
    );
    let gap = vals(&gap);
    for m in 0..4 {
        let expected = e_pred[m] - e_ref[m];
        assert!(
            (gap[m] - expected).abs() < 1e-10,
            "molecule {m}: {} vs {expected}",
            gap[m]
        );
    }
    assert_eq!(gap[3], 0.0); // one atom, no pair
    assert!(gap[..3].iter().all(|g| g.abs() > 1e-3));
    // An energy that returns the wrong shape is an error, not a silent broadcast.
    let bad = |pos: &Tensor| -> Result<Tensor> { Ok(pos.sum(Kind::Double).reshape([1])) };
    assert!(matches!(
        energy_gap(&bad, &pred_t, &pos_tensor(&reference), &layout),
        Err(Error::Shape {
            arg: "energy model output",
            ..
        })
    ));
    Ok(())
}

#[test]
fn energy_mae_by_hand() -> Result<()> {
    single_thread();
    let layout = BatchLayout::from_counts(&[1, 2, 3, 4], Device::Cpu)?;
    let pred = Tensor::from_slice(&[1.0f64, -2.0, 3.5, 0.0]).set_requires_grad(true);
    let target = Tensor::from_slice(&[0.5f64, -1.0, 3.0, 2.0]);
    let mae = energy_mae(&pred, &target, None, &layout)?;
    assert!(!mae.requires_grad());
    assert!((mae.double_value(&[]) - (0.5 + 1.0 + 0.5 + 2.0) / 4.0).abs() < 1e-15);
    // Masked: molecules 1 and 3 only; unlabelled targets may hold NaN.
    let target_nan = Tensor::from_slice(&[f64::NAN, -1.0, f64::NAN, 2.0]);
    let mask = Tensor::from_slice(&[false, true, false, true]);
    let masked = energy_mae(&pred, &target_nan, Some(&mask), &layout)?;
    assert!((masked.double_value(&[]) - (1.0 + 2.0) / 2.0).abs() < 1e-15);
    // Not per atom: molecule size does not scale the error.
    let single = Tensor::from_slice(&[false, false, false, true]);
    assert!((energy_mae(&pred, &target, Some(&single), &layout)?.double_value(&[]) - 2.0).abs() < 1e-15);
    let none = Tensor::from_slice(&[false; 4]);
    let empty = energy_mae(&pred, &target, Some(&none), &layout)?;
    assert_eq!(empty.double_value(&[]), 0.0);
    Ok(())
}
