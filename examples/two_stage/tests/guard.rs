//! The energy guard of `relax` and `refine`: a refinement is kept only where the
//! energy model does not put it higher than the structure it started from.

use physcon::data::{Frame, LabelledBatch, Splits};
use physcon::diffusion::NoiseSchedule;
use tch::{Device, Kind, Tensor};
use two_stage::eval::{generate, Generation, Guard};
use two_stage::model::{Graph, Model, ModelConfig};

fn relax(rounds: i64, guard: Guard) -> Generation {
    Generation::Relax {
        start: 10,
        steps: 5,
        rounds,
        guard,
    }
}

#[test]
fn the_guard_keeps_only_refinements_the_energy_model_puts_lower() {
    tch::manual_seed(3);
    tch::set_num_threads(1);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let splits = Splits::read_dir(root.join("data")).unwrap();
    let mmff = splits.val.with_level("mmff");
    let frames: Vec<&Frame> = mmff.frames()[..24].iter().collect();
    let b = LabelledBatch::from_frames(&frames, Kind::Float, Device::Cpu).unwrap();
    let g = Graph::new(&b.batch, Kind::Float).unwrap();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model = Model::new(&vs.root(), ModelConfig::default(), 1000);
    let schedule = NoiseSchedule::cosine(1000).unwrap();
    let start = b.batch.pos();
    let energy = |x: &Tensor| tch::no_grad(|| model.energy(&g, x).unwrap());
    let per_molecule = |t: Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap();

    // One round: the guarded structure is the unguarded one where that is lower, else the start.
    let free = generate(&model, &g, start, 1, relax(1, Guard::Off), &schedule).unwrap();
    assert!(free.guarded.is_none());
    let guarded = generate(&model, &g, start, 1, relax(1, Guard::Energy), &schedule).unwrap();
    let verdict = &guarded.guarded.as_ref().unwrap()[0];
    let kept = Vec::<bool>::try_from(&verdict.accepted).unwrap();
    let lower = Vec::<bool>::try_from(energy(&free.samples[0]).le_tensor(&energy(start))).unwrap();
    assert_eq!(kept, lower);
    assert!(
        kept.iter().any(|k| *k) && kept.iter().any(|k| !*k),
        "an untrained model should put some refinements higher and some lower: {kept:?}"
    );
    let atoms =
        |x: &Tensor, m: usize| x.index_select(0, &g.layout.batch().eq(m as i64).nonzero().squeeze_dim(1));
    for (m, &k) in kept.iter().enumerate() {
        let expected = if k { &free.samples[0] } else { start };
        assert!(
            atoms(&guarded.samples[0], m).equal(&atoms(expected, m)),
            "molecule {m}"
        );
    }
    let change = per_molecule(verdict.energy_change.shallow_clone());
    let direct = per_molecule(energy(&guarded.samples[0]) - energy(start));
    for (m, (c, d)) in change.iter().zip(&direct).enumerate() {
        assert!(*c <= 0.0 && (c - d).abs() < 1e-6, "molecule {m}: {c} vs {d}");
    }

    // A largest move: nothing moves under a limit no refinement keeps to; a limit no
    // refinement reaches changes nothing.
    let tight = generate(
        &model,
        &g,
        start,
        1,
        relax(1, Guard::EnergyAndMove(1e-9)),
        &schedule,
    )
    .unwrap();
    assert!(tight.samples[0].equal(start));
    let loose = generate(
        &model,
        &g,
        start,
        1,
        relax(1, Guard::EnergyAndMove(100.0)),
        &schedule,
    )
    .unwrap();
    assert!(loose.samples[0].equal(&guarded.samples[0]));

    // Several rounds: never above the start, and a molecule refused every round is the start.
    let rounds = generate(&model, &g, start, 1, relax(3, Guard::Energy), &schedule).unwrap();
    let verdict = &rounds.guarded.as_ref().unwrap()[0];
    let kept = Vec::<bool>::try_from(&verdict.accepted).unwrap();
    for (m, c) in per_molecule(verdict.energy_change.shallow_clone())
        .iter()
        .enumerate()
    {
        assert!(*c <= 0.0, "molecule {m}: {c}");
        if !kept[m] {
            assert!(
                atoms(&rounds.samples[0], m).equal(&atoms(start, m)),
                "molecule {m}"
            );
        }
    }

    // Descent steps along the energy model's forces: one small step is the force
    // times the step where the energy model takes it, never uphill in all.
    let descent = |steps| Generation::Descent { step: 1e-3, steps };
    let one = generate(&model, &g, start, 1, descent(1), &schedule).unwrap();
    let f = physcon::forces(&model.energy_model(&g), start, &g.layout, false).unwrap();
    let verdict = &one.guarded.as_ref().unwrap()[0];
    let kept = Vec::<bool>::try_from(&verdict.accepted).unwrap();
    assert!(
        kept.iter().filter(|k| **k).count() >= 20,
        "small steps along the forces go downhill: {kept:?}"
    );
    for (m, &k) in kept.iter().enumerate() {
        let expected = if k {
            start + &f * 1e-3
        } else {
            start.shallow_clone()
        };
        let gap = (atoms(&one.samples[0], m) - atoms(&expected, m))
            .abs()
            .max()
            .double_value(&[]);
        assert!(gap < 1e-6, "molecule {m}: {gap}");
    }
    let three = generate(&model, &g, start, 1, descent(3), &schedule).unwrap();
    let change = per_molecule(three.guarded.as_ref().unwrap()[0].energy_change.shallow_clone());
    assert!(change.iter().all(|c| *c <= 0.0), "{change:?}");
    assert!(
        change.iter().sum::<f64>()
            < per_molecule(verdict.energy_change.shallow_clone())
                .iter()
                .sum::<f64>()
    );

    // Refine draws noise and is guarded against the input alike.
    let refine = Generation::Refine {
        start: 10,
        steps: 5,
        guard: Guard::Energy,
    };
    let refined = generate(&model, &g, start, 2, refine, &schedule).unwrap();
    for (sample, verdict) in refined.samples.iter().zip(refined.guarded.as_ref().unwrap()) {
        let above = energy(sample) - energy(start);
        assert!(per_molecule(above).iter().all(|c| *c <= 0.0));
        assert_eq!(verdict.energy_change.size(), [24]);
    }
}
