//! What `predict` checks about each molecule of a user's file, before the
//! model runs (size, elements, 2D drawings, implicit hydrogens) and after it
//! (exploded structures); the batches are [`crate::batching`]'s.
//!
//! Every finding is one line naming the file, the line of the molecule and
//! the molecule, and for what the user can fix, the way out.

use physcon::data::{excerpt, symbol};

use crate::batching::{pairs, MAX_PAIRS};
use crate::generation::GenerationName;
use crate::io::{Input, InputMolecule};

/// Atoms of one molecule at most: the largest whose pairs fit [`MAX_PAIRS`].
/// The training molecules have at most 12 heavy atoms (about 40 with H).
pub const MAX_ATOMS: usize = 512;

/// A molecule whose z coordinates all lie within this span (Å) is taken
/// for a 2D drawing.
pub const FLAT_SPAN: f64 = 1e-3;

/// One record of the input that is not predicted: its line and the message.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// 1-based line of the record (its title or atom count).
    pub line: usize,
    /// `file:line: what`, one line.
    pub message: String,
}

/// The input's molecules sorted into those the model predicts and those it cannot.
#[derive(Debug, Clone, Default)]
pub struct Screened {
    /// Indices into `Input::molecules` of the molecules to predict.
    pub kept: Vec<usize>,
    /// Records not predicted, in file order: malformed, unknown elements,
    /// pseudo-atoms, too many atoms.
    pub skipped: Vec<Skipped>,
    /// Per molecule of `Input::molecules`: a 2D drawing (see [`screen`]'s notes).
    pub flat: Vec<bool>,
    /// Per molecule of `Input::molecules`: a carbon short of four bonds
    /// (hydrogens left implicit).
    pub implicit_h: Vec<bool>,
    /// Warnings about kept molecules, one line each, in file order.
    pub notes: Vec<String>,
}

/// Sorts the molecules of `input` for a model that knows the elements `known`.
pub fn screen(input: &Input, known: &[i64]) -> Screened {
    let names: Vec<&str> = known.iter().filter_map(|&z| symbol(z)).collect();
    let mut s = Screened {
        skipped: input
            .rejected
            .iter()
            .map(|r| Skipped {
                line: r.line,
                message: r.error.to_string(),
            })
            .collect(),
        ..Default::default()
    };
    for (k, m) in input.molecules.iter().enumerate() {
        let at = |line: usize| {
            format!(
                "{}:{line}: molecule `{}`",
                input.path.display(),
                excerpt(&m.frame.mol_id)
            )
        };
        let flat = is_flat(m);
        let implicit = implicit_hydrogen(m);
        s.flat.push(flat.is_some());
        s.implicit_h.push(implicit.is_some());
        if let Some(a) = m.frame.species.iter().position(|z| !known.contains(z)) {
            let z = m.frame.species[a];
            let what = match (z, m.record.as_ref().and_then(|r| r.atom_symbol(a))) {
                (0, Some(sym)) => format!("is the pseudo-atom `{}`, not an element", excerpt(sym)),
                _ => format!("is element {}", symbol(z).unwrap_or("?")),
            };
            s.skipped.push(Skipped {
                line: m.line,
                message: format!(
                    "{}: atom {} {what}; the model knows {}",
                    at(m.atom_lines[a]),
                    a + 1,
                    names.join(", ")
                ),
            });
            continue;
        }
        let n = m.frame.num_atoms();
        if n > MAX_ATOMS {
            s.skipped.push(Skipped {
                line: m.line,
                message: format!(
                    "{} has {n} atoms; predict takes at most {MAX_ATOMS} per molecule (the model pairs \
                     every two atoms: {:.1e} pairs, the memory budget is {MAX_PAIRS}; it was trained \
                     on molecules of at most 12 heavy atoms)",
                    at(m.line),
                    pairs(n) as f64
                ),
            });
            continue;
        }
        s.kept.push(k);
        if let Some(why) = flat {
            s.notes.push(format!(
                "{} is a 2D drawing ({why}); relax and refine start from the input and keep it \
                 flat. Embed it in 3D first (RDKit: AllChem.EmbedMolecule(m)), or pass --generation \
                 noise (built from noise: the input's coordinates are not used)",
                at(m.line)
            ));
        }
        if let Some(why) = implicit {
            s.notes.push(format!(
                "{} {why}: its hydrogens are implicit, and the model was trained with every hydrogen \
                 explicit and cannot add atoms. Add them first (RDKit: Chem.AddHs(m, addCoords=True); \
                 Open Babel: obabel -h)",
                at(m.line)
            ));
        }
    }
    s.skipped.sort_by_key(|r| r.line);
    s
}

/// Whether the molecule is a 2D drawing: its SDF header says `2D`, or (no
/// code in the header, or extended XYZ) every z coordinate lies within
/// [`FLAT_SPAN`] (three atoms or more: two atoms always lie in some plane).
/// A header that says `3D` is believed: a planar molecule may lie in z = 0.
fn is_flat(m: &InputMolecule) -> Option<&'static str> {
    match m.record.as_ref().and_then(|r| r.dimension()) {
        Some("2D") => return Some("its header says 2D"),
        Some(_) => return None,
        None => {}
    }
    let z = m.frame.pos.iter().map(|p| p[2]);
    let (lo, hi) = z.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), z| {
        (lo.min(z), hi.max(z))
    });
    (m.frame.num_atoms() >= 3 && hi - lo < FLAT_SPAN).then_some("every z within 0.001 Å")
}

/// Why the molecule's hydrogens look implicit: no hydrogen atom at all, or a
/// carbon whose bond orders (aromatic 1.5) add up to less than 4. Molecules
/// without any bond are not judged (nothing tells their valences).
fn implicit_hydrogen(m: &InputMolecule) -> Option<String> {
    if m.bonds.is_empty() {
        return None;
    }
    let mut valence = vec![0.0; m.frame.num_atoms()];
    for &(i, j, o) in &m.bonds {
        let v = if o == 4 { 1.5 } else { f64::from(o) };
        valence[i] += v;
        valence[j] += v;
    }
    let short = (0..valence.len()).find(|&a| m.frame.species[a] == 6 && valence[a] < 3.99)?;
    Some(if m.frame.species.contains(&1) {
        format!(
            "has carbon atom {} with bond orders adding up to {} of 4",
            short + 1,
            valence[short]
        )
    } else {
        "has no hydrogen atoms".into()
    })
}

/// What an exploded structure means under a generation, and what to try instead.
pub fn exploded_hint(generation: GenerationName) -> &'static str {
    match generation {
        GenerationName::Fire => {
            "FIRE followed the energy model into a broken structure (the model's energy cannot be \
             trusted for this molecule); try --generation relax"
        }
        GenerationName::Descent => {
            "descent followed the energy model into a broken structure (the model's energy cannot \
             be trusted for this molecule); try a smaller --descent-step or --generation relax"
        }
        GenerationName::Noise => {
            "the structure generated from noise exploded; try --generation relax or refine, or more \
             --ddim-steps"
        }
        GenerationName::Relax | GenerationName::Refine => {
            "the refined structure exploded; try more --ddim-steps or a smaller --start"
        }
    }
}

/// A length (Å) for a message: fixed-point while it is short, else in e-notation.
fn length(d: f64) -> String {
    if d < 1e3 {
        format!("{d:.2}")
    } else {
        format!("{d:.3e}")
    }
}

/// Covalent radius (Å, Cordero et al. 2008) of the elements the model knows.
fn covalent_radius(z: i64) -> f64 {
    match z {
        1 => 0.31,
        6 => 0.76,
        7 => 0.71,
        8 => 0.66,
        9 => 0.57,
        16 => 1.05,
        17 => 1.02,
        _ => 1.5,
    }
}

/// Why a generated structure is no structure at all (a model failure, e.g.
/// `--generation noise` with too few steps): a coordinate that is not finite,
/// a bond longer than twice its covalent length, or an atom farther from
/// the centroid than a straight chain of the molecule could reach
/// (2 Å per atom, plus 10 Å).
pub fn exploded(m: &InputMolecule, pos: &[[f64; 3]]) -> Option<String> {
    if pos.iter().flatten().any(|x| !x.is_finite()) {
        return Some("has non-finite coordinates".into());
    }
    let species = &m.frame.species;
    for &(i, j, _) in &m.bonds {
        let d = (0..3)
            .map(|k| (pos[i][k] - pos[j][k]).powi(2))
            .sum::<f64>()
            .sqrt();
        let limit = 2.0 * (covalent_radius(species[i]) + covalent_radius(species[j]));
        if d > limit {
            return Some(format!(
                "has bond {}-{} ({}-{}) {} Å long (a bond is at most {limit:.2} Å here)",
                i + 1,
                j + 1,
                symbol(species[i]).unwrap_or("?"),
                symbol(species[j]).unwrap_or("?"),
                length(d),
            ));
        }
    }
    let n = pos.len() as f64;
    let centroid: Vec<f64> = (0..3)
        .map(|k| pos.iter().map(|p| p[k]).sum::<f64>() / n)
        .collect();
    let reach = 2.0 * n + 10.0;
    pos.iter().enumerate().find_map(|(a, p)| {
        let r = (0..3).map(|k| (p[k] - centroid[k]).powi(2)).sum::<f64>().sqrt();
        (r > reach).then(|| {
            format!(
                "has atom {} {} Å from the centroid (a chain of {} atoms reaches {reach:.0} Å)",
                a + 1,
                length(r),
                pos.len()
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest molecule `screen` lets through fits one batch of its own.
    #[test]
    fn the_atom_limit_fits_the_pair_budget() {
        assert!(pairs(MAX_ATOMS) <= MAX_PAIRS && pairs(MAX_ATOMS + 1) > MAX_PAIRS);
    }
}
