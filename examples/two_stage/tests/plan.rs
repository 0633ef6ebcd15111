//! The two-stage training plan: presets, stage boundaries, learning rate, validation, terms.

use two_stage::plan::{LossWeights, Stage, Term, TrainingPlan};
use two_stage::{Error, Result};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(a.abs()).max(1e-300)
}

#[test]
fn paper_plan_values() -> Result<()> {
    tch::set_num_threads(1);
    let plan = TrainingPlan::paper();
    plan.validate()?;
    assert_eq!((plan.stage1_steps, plan.stage2_steps), (300_000, 200_000));
    assert_eq!(plan.total_steps(), 500_000);
    assert_eq!(plan.batch_size, 256);
    assert_eq!(plan.lr, 2e-4);
    assert_eq!(plan.warmup_steps, 10_000);
    assert_eq!(plan.final_lr, 0.0);
    assert_eq!(
        plan.stage1,
        LossWeights {
            energy: 1.0,
            denoising: 0.01,
            force: 0.0,
            optimality: 0.0,
            score: 0.0,
        }
    );
    // Stage 2 keeps stage 1's terms and adds optimality, score and forces.
    assert_eq!(plan.stage2.energy, 1.0);
    assert_eq!(plan.stage2.denoising, 0.01);
    assert_eq!(plan.stage2.optimality, 0.1);
    assert_eq!(plan.stage2.score, 1.0);
    assert!(plan.stage2.force > 0.0);
    Ok(())
}

#[test]
fn stage_boundaries() -> Result<()> {
    tch::set_num_threads(1);
    let plan = TrainingPlan::paper();
    for (step, stage) in [
        (0, Stage::MultiTask),
        (299_999, Stage::MultiTask),
        (300_000, Stage::Consistency),
        (499_999, Stage::Consistency),
    ] {
        assert_eq!(plan.stage(step)?, stage, "step {step}");
    }
    assert_eq!(plan.weights(299_999)?, plan.stage1);
    assert_eq!(plan.weights(300_000)?, plan.stage2);
    assert_eq!(plan.weights(0)?.optimality, 0.0);
    assert_eq!(plan.weights(499_999)?.optimality, 0.1);
    for step in [500_000u64, 500_001, u64::MAX / 2] {
        assert!(matches!(
            plan.stage(step),
            Err(Error::Invalid { name: "step", reason }) if reason.contains("last step (499999)")
        ));
        assert!(matches!(
            plan.weights(step),
            Err(Error::Invalid { name: "step", .. })
        ));
        assert!(matches!(plan.lr(step), Err(Error::Invalid { name: "step", .. })));
    }
    match plan.lr(500_000) {
        Err(Error::Invalid { reason, .. }) => assert!(reason.starts_with("500000 is past"), "{reason}"),
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[test]
fn learning_rate_schedule() -> Result<()> {
    tch::set_num_threads(1);
    let plan = TrainingPlan::paper();
    // Warm-up: lr (step + 1) / warmup.
    assert!(close(plan.lr(0)?, 2e-4 / 10_000.0, 1e-12));
    assert!(close(plan.lr(4_999)?, 2e-4 * 0.5, 1e-12));
    assert!(close(plan.lr(9_999)?, 2e-4, 1e-12));
    assert!(close(plan.lr(10_000)?, 2e-4, 1e-12));
    // Linear decay from lr at the end of warm-up to final_lr at the last step.
    let span = (500_000 - 1 - 10_000) as f64;
    for step in [10_001u64, 123_456, 300_000, 499_998] {
        let expected = 2e-4 * (1.0 - (step - 10_000) as f64 / span);
        // Absolute tolerance on the scale of lr: lr (1 - w) cancels near the end.
        assert!((plan.lr(step)? - expected).abs() < 1e-12 * 2e-4, "step {step}");
    }
    assert!(plan.lr(499_999)?.abs() < 1e-20);
    // Monotone: up during warm-up, then down.
    let mut last = 0.0;
    for step in (0..10_000).step_by(97) {
        let lr = plan.lr(step)?;
        assert!(lr > last);
        last = lr;
    }
    assert!(plan.lr(10_000)? >= last);
    last = plan.lr(10_000)?;
    for step in (10_000..500_000).step_by(997) {
        let lr = plan.lr(step)?;
        assert!(lr <= last);
        last = lr;
    }
    // A plan whose decay span is even has an exact midpoint.
    let small = TrainingPlan {
        stage1_steps: 100,
        stage2_steps: 101,
        warmup_steps: 10,
        lr: 1e-3,
        final_lr: 1e-5,
        ..TrainingPlan::paper()
    };
    small.validate()?;
    // span = 201 - 1 - 10 = 190: the midpoint is step 10 + 95.
    assert!(close(small.lr(105)?, (1e-3 + 1e-5) / 2.0, 1e-12));
    assert!(close(small.lr(200)?, 1e-5, 1e-12));
    assert!(close(small.lr(0)?, 1e-4, 1e-12));
    assert!(close(small.lr(9)?, 1e-3, 1e-12));
    // No warm-up: the first step is at the peak.
    let no_warmup = TrainingPlan {
        warmup_steps: 0,
        ..small.clone()
    };
    assert!(close(no_warmup.lr(0)?, 1e-3, 1e-12));
    assert!(close(no_warmup.lr(200)?, 1e-5, 1e-12));
    // A single step.
    let single = TrainingPlan {
        stage1_steps: 1,
        stage2_steps: 0,
        warmup_steps: 0,
        ..small
    };
    assert!(single.lr(0)?.is_finite());
    Ok(())
}

#[test]
fn validate_rejects_bad_plans() {
    tch::set_num_threads(1);
    let invalid = |plan: TrainingPlan, name: &str| match plan.validate() {
        Err(Error::Invalid { name: got, .. }) => assert_eq!(got, name, "{plan:?}"),
        other => panic!("expected Invalid({name}), got {other:?} for {plan:?}"),
    };
    let base = TrainingPlan::paper();
    invalid(
        TrainingPlan {
            stage1_steps: 0,
            stage2_steps: 0,
            ..base.clone()
        },
        "steps",
    );
    invalid(
        TrainingPlan {
            batch_size: 0,
            ..base.clone()
        },
        "batch_size",
    );
    for lr in [0.0, -1e-4, f64::NAN, f64::INFINITY] {
        invalid(TrainingPlan { lr, ..base.clone() }, "lr");
    }
    for final_lr in [-1e-6, 3e-4, f64::NAN] {
        invalid(
            TrainingPlan {
                final_lr,
                ..base.clone()
            },
            "lr",
        );
    }
    let bad_weights = [-0.1, f64::NAN, f64::INFINITY];
    for w in bad_weights {
        invalid(
            TrainingPlan {
                stage1: LossWeights {
                    denoising: w,
                    ..base.stage1
                },
                ..base.clone()
            },
            "stage1",
        );
        invalid(
            TrainingPlan {
                stage2: LossWeights {
                    score: w,
                    ..base.stage2
                },
                ..base.clone()
            },
            "stage2",
        );
    }
    // Edge cases that are fine.
    assert!(TrainingPlan {
        final_lr: 2e-4,
        ..base.clone()
    }
    .validate()
    .is_ok());
    assert!(TrainingPlan {
        stage2_steps: 0,
        ..base
    }
    .validate()
    .is_ok());
}

#[test]
fn cpu_preset_is_valid_and_small() -> Result<()> {
    tch::set_num_threads(1);
    let plan = TrainingPlan::cpu();
    plan.validate()?;
    assert!(plan.total_steps() <= 10_000 && plan.stage1_steps > 0 && plan.stage2_steps > 0);
    assert!(plan.batch_size <= 64 && plan.batch_size >= 1);
    assert!(plan.warmup_steps < plan.stage1_steps);
    let paper = TrainingPlan::paper();
    assert_eq!((plan.stage1, plan.stage2), (paper.stage1, paper.stage2));
    assert!(close(plan.lr(plan.total_steps() - 1)?, plan.final_lr, 1e-12));
    assert_eq!(plan.stage(plan.stage1_steps)?, Stage::Consistency);
    Ok(())
}

#[test]
fn active_lists_non_zero_terms() {
    tch::set_num_threads(1);
    let plan = TrainingPlan::paper();
    assert_eq!(plan.stage1.active(), vec![("energy", 1.0), ("denoising", 0.01)]);
    let names: Vec<&str> = plan.stage2.active().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, vec!["energy", "denoising", "force", "optimality", "score"]);
    let some = LossWeights {
        energy: 0.0,
        denoising: 0.0,
        force: 2.5,
        optimality: 0.0,
        score: 1e-9,
    };
    assert_eq!(some.active(), vec![("force", 2.5), ("score", 1e-9)]);
    let none = LossWeights {
        force: 0.0,
        score: 0.0,
        ..some
    };
    assert!(none.active().is_empty());
    assert_eq!(none.named().len(), 5);
}

#[test]
fn terms_name_the_weights_in_one_order() {
    let w = LossWeights {
        energy: 1.0,
        denoising: 2.0,
        force: 3.0,
        optimality: 4.0,
        score: 5.0,
    };
    let names: Vec<&str> = Term::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["energy", "denoising", "force", "optimality", "score"]);
    for (k, term) in Term::ALL.into_iter().enumerate() {
        assert_eq!(w.get(term), (k + 1) as f64, "{term:?}");
        assert_eq!(w.named()[k], (term.name(), w.get(term)));
    }
}
