//! The study's results per seed, the Markdown report and tables, and SVG scatter plots.

use std::fmt::Write as _;
use std::path::Path;

use crate::Result;
use physcon::data::write_atomic;

use crate::eval::{Evaluation, Scores};
use crate::objective::Arm;
use crate::settings::Settings;

/// The stage-2 arms of one seed evaluated on one split, in training order.
#[derive(Debug, Clone)]
pub struct SplitScores(pub Vec<(Arm, Evaluation)>);

impl SplitScores {
    /// The evaluation of `arm`, if it was trained.
    pub fn get(&self, arm: Arm) -> Option<&Evaluation> {
        self.0.iter().find(|(a, _)| *a == arm).map(|(_, e)| e)
    }

    /// Molecules in the split.
    pub fn molecules(&self) -> usize {
        self.0.first().map_or(0, |(_, e)| e.baseline.molecules)
    }

    /// The report's rows: per arm, the cheap structures judged with the arm's energy, then the arm.
    fn rows(&self) -> Vec<(String, &Scores)> {
        self.0
            .iter()
            .flat_map(|(arm, e)| {
                [
                    (
                        format!("MMFF structure (cheap level), {}'s energy", arm.name()),
                        &e.baseline,
                    ),
                    (arm.describe().to_owned(), &e.model),
                ]
            })
            .collect()
    }
}

/// What one seed of the study produced.
#[derive(Debug, Clone)]
pub struct SeedResult {
    pub seed: u64,
    /// `None` when the split was not evaluated.
    pub val: Option<SplitScores>,
    pub test: Option<SplitScores>,
    /// Wall time of training stage 1 and every arm (s).
    pub wall_seconds: f64,
}

fn mean_std(values: &[f64]) -> String {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return format!("{mean:.4}");
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    format!("{mean:.4} ± {:.4}", var.sqrt())
}

/// A Markdown table of scores, one row per named set (mean ± std over its entries);
/// the best-of-K column only when there are several samples to pick from.
pub fn table(rows: &[(&str, Vec<&Scores>)], samples: i64) -> String {
    let best_of = samples > 1;
    let mut s = String::from("| structures | RMSD mean (Å) |");
    if best_of {
        let _ = write!(s, " RMSD min of {samples} (Å) |");
    }
    s.push_str(
        " EGap under the model (eV) | energy MAE on MMFF (eV) | energy MAE on xTB-opt (eV) | \
         force MAE / RMSE off-eq (eV/Å) | energy MAE off-eq (eV) | force MAE at MMFF (eV/Å) |\n",
    );
    s.push_str(&"|---".repeat(if best_of { 9 } else { 8 }));
    s.push_str("|\n");
    for (name, scores) in rows {
        let col = |f: fn(&Scores) -> f64| {
            let values: Vec<f64> = scores.iter().map(|s| f(s)).collect();
            if values.iter().all(|v| v.is_nan()) {
                "—".to_owned()
            } else {
                mean_std(&values)
            }
        };
        let _ = write!(s, "| {name} | {} |", col(|s| s.rmsd_mean));
        if best_of {
            let _ = write!(s, " {} |", col(|s| s.rmsd_min));
        }
        let _ = writeln!(
            s,
            " {} | {} | {} | {} / {} | {} | {} |",
            col(|s| s.egap),
            col(|s| s.mae_mmff),
            col(|s| s.mae_opt),
            col(|s| s.teacher_offeq.force_mae),
            col(|s| s.teacher_offeq.force_rmse),
            col(|s| s.teacher_offeq.energy_mae),
            col(|s| s.teacher_mmff.force_mae)
        );
    }
    s
}

/// The study's report: settings, val and test tables over seeds, per-seed lines.
pub fn report(
    settings: &Settings,
    seeds: &[u64],
    results: &[SeedResult],
    generation: &str,
    samples: i64,
    total_seconds: f64,
) -> String {
    let mut s = String::from("# physcon two-stage example: report\n\n");
    let p = &settings.plan;
    let _ = writeln!(
        s,
        "Preset `{}`: stage 1 {} steps, stage 2 {} steps per arm, batch {}, lr {:.0e}, kT {:.4} eV, model {:?}.\n\
         Seeds {seeds:?}; generation: {generation}, {samples} samples per molecule. Wall time {total_seconds:.0} s in all.\n\
         Mean ± standard deviation over seeds. RMSD and EGap are against the GFN2-xTB-optimised structures.\n",
        settings.preset.name(), p.stage1_steps, p.stage2_steps, p.batch_size, p.lr, settings.kt, settings.model,
    );
    for (title, is_test) in [("Test split", true), ("Validation split", false)] {
        let splits: Vec<&SplitScores> = results
            .iter()
            .filter_map(|r| if is_test { r.test.as_ref() } else { r.val.as_ref() })
            .collect();
        let Some(first) = splits.first() else {
            let _ = writeln!(s, "## {title}: not evaluated\n");
            continue;
        };
        let _ = writeln!(s, "## {title} ({} molecules)\n", first.molecules());
        let names = first.rows();
        let rows: Vec<(&str, Vec<&Scores>)> = names
            .iter()
            .enumerate()
            .map(|(k, (name, _))| {
                (
                    name.as_str(),
                    splits
                        .iter()
                        .filter_map(|sp| sp.rows().get(k).map(|r| r.1))
                        .collect(),
                )
            })
            .collect();
        s.push_str(&table(&rows, samples));
        s.push('\n');
    }
    let arms: Vec<&str> = results
        .iter()
        .find_map(|r| r.test.as_ref().or(r.val.as_ref()))
        .map(|sp| sp.0.iter().map(|(a, _)| a.name()).collect())
        .unwrap_or_default();
    let arms = arms.join(" / ");
    let _ = writeln!(
        s,
        "Per seed (test RMSD mean and EGap under the model: {arms}; wall time of all arms):\n"
    );
    for r in results {
        let (seed, wall) = (r.seed, r.wall_seconds);
        match &r.test {
            Some(t) => {
                let join = |f: fn(&Scores) -> f64| {
                    t.0.iter()
                        .map(|(_, e)| format!("{:.4}", f(&e.model)))
                        .collect::<Vec<_>>()
                        .join(" / ")
                };
                let _ = writeln!(
                    s,
                    "- seed {seed}: {}; EGap {} eV; {wall:.0} s",
                    join(|m| m.rmsd_mean),
                    join(|m| m.egap)
                );
            }
            None => {
                let _ = writeln!(s, "- seed {seed}: test not evaluated; {wall:.0} s");
            }
        }
    }
    s.push_str(
        "\nPlots (test split, first seed): `scatter-<arm>.svg` (E(R_pred) against \
         E(R_ref) under each arm's model), `rmsd-paired.svg` (per-molecule RMSD, control against consistency). \
         Per-step losses: `seed-*/metrics.csv`.\n",
    );
    s
}

/// The plots of one seed's test split: each arm's energies, and the per-molecule
/// RMSD of the consistency arm against the control (when both were trained).
pub fn write_plots(out: &Path, seed: u64, test: &SplitScores) -> Result<()> {
    let energy = ("E(R_ref) under the model (eV)", "E(R_pred) under the model (eV)");
    for (arm, e) in &test.0 {
        let name = arm.name();
        let title = format!("{name} arm, test split, seed {seed}");
        write_svg(
            &out.join(format!("scatter-{name}.svg")),
            &scatter_svg(&title, energy.0, energy.1, &e.model.scatter),
        )?;
    }
    let (Some(control), Some(consistency)) = (test.get(Arm::Control), test.get(Arm::Consistency)) else {
        return Ok(());
    };
    let paired: Vec<(f64, f64)> = control
        .model
        .rmsd_per_molecule
        .iter()
        .copied()
        .zip(consistency.model.rmsd_per_molecule.iter().copied())
        .collect();
    let title = format!(
        "RMSD to the xTB minimum per molecule, test, seed {seed} (below the line: consistency better)"
    );
    write_svg(
        &out.join("rmsd-paired.svg"),
        &scatter_svg(&title, "control (Å)", "consistency (Å)", &paired),
    )
}

/// A scatter plot as SVG (one point per molecule, y = x dashed).
///
/// Hand-written: a plotting crate would need system or embedded fonts for
/// this one chart; SVG text is laid out by the viewer.
pub fn scatter_svg(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)]) -> String {
    let (w, h, pad) = (480.0, 480.0, 60.0);
    let lo = points
        .iter()
        .flat_map(|p| [p.0, p.1])
        .fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .flat_map(|p| [p.0, p.1])
        .fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let margin = 0.03 * (hi - lo);
    let (lo, hi) = (lo - margin, hi + margin);
    let x = |v: f64| pad + (v - lo) / (hi - lo) * (w - 1.5 * pad);
    let y = |v: f64| h - pad - (v - lo) / (hi - lo) * (h - 1.5 * pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n\
         <line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"gray\" stroke-dasharray=\"4 4\"/>\n\
         <rect x=\"{pad}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n",
        w / 2.0,
        x(lo),
        y(lo),
        x(hi),
        y(hi),
        0.5 * pad,
        w - 1.5 * pad,
        h - 1.5 * pad,
    );
    // Enough decimals to tell ticks a quarter of the range apart.
    let decimals = (2.0 - (hi - lo).log10().floor()).clamp(0.0, 6.0) as usize;
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let label = format!("{v:.decimals$}");
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            x(v),
            h - pad + 18.0
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            pad - 6.0,
            y(v) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_label}</text>",
        w / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"15\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 15 {:.1})\">{y_label}</text>",
        h / 2.0,
        h / 2.0
    );
    for (a, b) in points {
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.2}\" cy=\"{:.2}\" r=\"2.5\" fill=\"#1f77b4\" fill-opacity=\"0.7\"/>",
            x(*a),
            y(*b)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes an SVG atomically.
pub fn write_svg(path: &Path, svg: &str) -> Result<()> {
    Ok(write_atomic(path, svg.as_bytes())?)
}
