//! What `predict` checks about each molecule of a user's file, before the
//! model runs (size, elements, the input's own geometry, 2D drawings,
//! valences: implicit hydrogens, hypervalent atoms) and after it (exploded
//! structures, by the criterion the input's geometry is held to first, so that
//! the model is blamed only where its input was sound); the batches are
//! [`crate::batching`]'s.
//!
//! Every finding is one line naming the file, the line of the molecule and
//! the molecule, and for what the user can fix, the way out.

use std::path::Path;

use physcon::data::{excerpt, symbol};

use crate::batching::{pairs, MAX_PAIRS};
use crate::generation::GenerationName;
use crate::io::InputMolecule;

/// Atoms of one molecule at most: the largest whose pairs fit [`MAX_PAIRS`].
/// The training molecules have at most 12 heavy atoms (about 40 with H).
pub const MAX_ATOMS: usize = 512;

/// What [`Screener::molecule`] found about one molecule of the input.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    /// Why the molecule is not predicted (`file:line: what`, one line), if it
    /// is not: an unknown element, a pseudo-atom, too many atoms, a broken
    /// input geometry.
    pub skipped: Option<String>,
    /// A 2D drawing (see [`Screener`]'s notes).
    pub flat: bool,
    /// A carbon short of the bonds its charge leaves it (hydrogens left implicit).
    pub implicit_h: bool,
    /// An atom with more bonds than its element and formal charge take (a
    /// carbon with five, an uncharged nitrogen with four).
    pub hypervalent: bool,
    /// What is wrong with the input's own geometry ([`broken`] applied to
    /// it), if anything; a structure generated from such an input is not
    /// blamed on the model.
    pub input_geometry: Option<String>,
    /// Warnings about a predicted molecule, one line each.
    pub notes: Vec<String>,
}

/// Sorts the molecules of the file `path`, one at a time, for a model that
/// knows the elements `known` and generates with `generation`: a molecule
/// whose own geometry is broken ([`broken`]) is skipped when the generation
/// starts from its coordinates (all but `noise`) and it is no 2D drawing,
/// whose coordinates are no geometry (warned about as such).
#[derive(Clone)]
pub struct Screener<'a> {
    path: &'a Path,
    known: &'a [i64],
    names: String,
    generation: GenerationName,
}

impl<'a> Screener<'a> {
    pub fn new(path: &'a Path, known: &'a [i64], generation: GenerationName) -> Self {
        let names: Vec<&str> = known.iter().filter_map(|&z| symbol(z)).collect();
        Self {
            path,
            known,
            names: names.join(", "),
            generation,
        }
    }

    /// What predict does with `m`, and what to tell about it.
    pub fn molecule(&self, m: &InputMolecule) -> Screen {
        let (known, generation) = (self.known, self.generation);
        let at = |line: usize| {
            format!(
                "{}:{line}: molecule `{}`",
                self.path.display(),
                excerpt(&m.frame.mol_id)
            )
        };
        let flat = is_flat(m);
        let valence = Valence::of(m);
        let implicit = valence.implicit_hydrogen(m);
        let hypervalent = valence.hypervalent(m);
        let mut s = Screen {
            flat: flat.is_some(),
            implicit_h: implicit.is_some(),
            hypervalent: hypervalent.is_some(),
            ..Screen::default()
        };
        if let Some(a) = m.frame.species.iter().position(|z| !known.contains(z)) {
            let z = m.frame.species[a];
            let what = match (z, m.record.as_ref().and_then(|r| r.atom_symbol(a))) {
                (0, Some(sym)) => format!("is the pseudo-atom `{}`, not an element", excerpt(sym)),
                _ => format!("is element {}", symbol(z).unwrap_or("?")),
            };
            s.skipped = Some(format!(
                "{}: atom {} {what}; the model knows {}",
                at(m.atom_lines[a]),
                a + 1,
                self.names
            ));
            return s;
        }
        let n = m.frame.num_atoms();
        if n > MAX_ATOMS {
            s.skipped = Some(format!(
                "{} has {n} atoms; predict takes at most {MAX_ATOMS} per molecule (the model pairs \
                 every two atoms: {:.1e} pairs, the memory budget is {MAX_PAIRS}; it was trained \
                 on molecules of at most 12 heavy atoms)",
                at(m.line),
                pairs(n) as f64
            ));
            return s;
        }
        // Only molecules of at most MAX_ATOMS come here: the check looks at every pair.
        let geometry = broken(m, &m.frame.pos);
        s.input_geometry.clone_from(&geometry);
        let uses_input = generation != GenerationName::Noise;
        if let (Some(why), None, true) = (&geometry, flat, uses_input) {
            s.skipped = Some(format!(
                "{}: the input structure itself {why}, before any model ran: its coordinates (or \
                 bonds) are wrong, and --generation {} would start from them. Correct the input \
                 (RDKit: AllChem.EmbedMolecule(m), then AllChem.MMFFOptimizeMolecule(m)), or pass \
                 --generation noise (the input's coordinates are not used)",
                at(m.line),
                generation.name()
            ));
            return s;
        }
        if let Some(why) = flat {
            s.notes.push(format!(
                "{} is a 2D drawing ({why}); relax and refine start from the input and keep it \
                 flat. Embed it in 3D first (RDKit: AllChem.EmbedMolecule(m)), or pass --generation \
                 noise (built from noise: the input's coordinates are not used)",
                at(m.line)
            ));
        }
        if let (Some(why), None, false) = (&geometry, flat, uses_input) {
            s.notes.push(format!(
                "{}: the input structure {why}; --generation noise does not use its coordinates, but \
                 check its bonds, which it does use",
                at(m.line)
            ));
        }
        if let Some(why) = implicit {
            s.notes.push(format!(
                "{} {why}: its hydrogens are implicit, and the model was trained with every hydrogen \
                 explicit and cannot add atoms. Add them first (RDKit: Chem.AddHs(m, addCoords=True); \
                 Open Babel: obabel -h){}",
                at(m.line),
                valence.charges_note(false)
            ));
        }
        if let Some((a, why)) = hypervalent {
            s.notes.push(format!(
                "{}: atom {} {why}: no structure has it, and the model was trained on molecules with \
                 their charges. Check its bonds and formal charges{}",
                at(m.atom_lines[a]),
                a + 1,
                valence.charges_note(true)
            ));
        }
        s
    }
}

/// Whether the molecule is a 2D drawing, and why: only where the file says so.
/// An SDF header whose dimensional code says `2D`; without a code, every z
/// exactly 0 (three atoms or more: two atoms always lie in some plane), as
/// drawing programs write it. A header that says `3D` is believed, and
/// extended XYZ is a 3D format: a planar or linear molecule lying in z = 0 is
/// no drawing.
fn is_flat(m: &InputMolecule) -> Option<&'static str> {
    match m.record.as_ref()?.dimension() {
        Some("2D") => Some("its header says 2D"),
        Some(_) => None,
        None => (m.frame.num_atoms() >= 3 && m.frame.pos.iter().all(|p| p[2] == 0.0)).then_some(
            "every z is 0 and the header's dimensional code (line 2, columns 21-22) is blank; if it is \
             a planar molecule in 3D, write `3D` there",
        ),
    }
}

/// The bonds of each atom as the file gives them, with formal charges: an
/// aromatic bond (order 4) is 1 or 2 in a Kekulé form, at most one of an
/// atom's 2, so an atom's valence lies in `low..=high`.
struct Valence {
    low: Vec<u32>,
    high: Vec<u32>,
    /// The formal charge of each atom, where the format holds them (SDF);
    /// extended XYZ does not.
    charges: Option<Vec<i32>>,
}

impl Valence {
    fn of(m: &InputMolecule) -> Self {
        let n = m.frame.num_atoms();
        let (mut sum, mut aromatic) = (vec![0u32; n], vec![0u32; n]);
        for &(i, j, o) in &m.frame.bonds {
            for a in [i, j] {
                if o == 4 {
                    aromatic[a] += 1;
                } else {
                    sum[a] += u32::from(o);
                }
            }
        }
        Self {
            low: (0..n).map(|a| sum[a] + aromatic[a]).collect(),
            high: (0..n)
                .map(|a| sum[a] + aromatic[a] + u32::from(aromatic[a] > 0))
                .collect(),
            charges: m.record.as_ref().map(|r| r.formal_charges()),
        }
    }

    fn charge(&self, a: usize) -> Option<i32> {
        self.charges.as_ref().map(|c| c[a])
    }

    /// The bonds an atom of element `z` with formal charge `q` takes at most:
    /// C 4 - |q| (a carbocation or carbanion has 3), N 3 + q, O 2 + q, F 1 + q,
    /// H 1 uncharged; S 6 and Cl 7 (hypervalent in sulfones, perchlorates).
    /// Without a charge (extended XYZ), the most of any charge: N 4 (N+ of a
    /// nitro group), O 3.
    fn most(z: i64, q: Option<i32>) -> Option<u32> {
        let most = match (z, q) {
            (1, q) => i32::from(q.unwrap_or(0) == 0),
            (6, q) => 4 - q.unwrap_or(0).abs(),
            (7, q) => 3 + q.unwrap_or(1),
            (8, q) => 2 + q.unwrap_or(1),
            (9, q) => 1 + q.unwrap_or(0),
            (16, _) => 6,
            (17, _) => 7,
            _ => return None,
        };
        Some(most.max(0) as u32)
    }

    /// Words for an atom's formal charge.
    fn charge_words(q: Option<i32>) -> String {
        match q {
            Some(0) => "uncharged".into(),
            Some(q) => format!("charge {q:+}"),
            None => "no charge in extended XYZ".into(),
        }
    }

    /// Why the molecule's hydrogens look implicit: no hydrogen atom at all, or a
    /// carbon whose bond orders add up to less than its formal charge leaves it
    /// (4, or 3 for C+ and C-; 4 without charges). Molecules without any bond
    /// are not judged (nothing tells their valences).
    fn implicit_hydrogen(&self, m: &InputMolecule) -> Option<String> {
        if m.frame.bonds.is_empty() {
            return None;
        }
        let species = &m.frame.species;
        let takes = |a: usize| Self::most(6, Some(self.charge(a).unwrap_or(0))).unwrap_or(4);
        let short = (0..species.len()).find(|&a| species[a] == 6 && self.high[a] < takes(a))?;
        Some(if species.contains(&1) {
            format!(
                "has carbon atom {} ({}) with bond orders adding up to {} of {}",
                short + 1,
                Self::charge_words(self.charge(short)),
                self.high[short],
                takes(short)
            )
        } else {
            "has no hydrogen atoms".into()
        })
    }

    /// The first atom with more bonds than its element and formal charge take
    /// ([`Self::most`]), and why: `(0-based atom, words)`.
    fn hypervalent(&self, m: &InputMolecule) -> Option<(usize, String)> {
        let species = &m.frame.species;
        (0..species.len()).find_map(|a| {
            let most = Self::most(species[a], self.charge(a))?;
            (self.low[a] > most).then(|| {
                (
                    a,
                    format!(
                        "({}, {}) has bond orders adding up to {}, more than the {most} such an atom takes{}",
                        symbol(species[a]).unwrap_or("?"),
                        Self::charge_words(self.charge(a)),
                        self.low[a],
                        if self.charges.is_some() {
                            ""
                        } else {
                            " with any charge"
                        }
                    ),
                )
            })
        })
    }

    /// Where the file's formal charges go, for a valence finding; extended XYZ has none.
    fn charges_note(&self, sdf_too: bool) -> &'static str {
        match (self.charges.is_some(), sdf_too) {
            (true, true) => " (SDF: the atom block's charge column, or `M  CHG` lines)",
            (true, false) => "",
            (false, _) => {
                "; extended XYZ carries no formal charges: give a charged molecule as SDF, with its charges"
            }
        }
    }
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

/// Why an input structure is no structure at all: what [`exploded`] finds in a
/// generated one, or two atoms closer than half the covalent length of a bond
/// between them (on top of each other). Generated structures are not held to
/// the second: the refinement of a 2D drawing (predicted, with a warning) keeps
/// the drawing's overlapping atoms.
pub fn broken(m: &InputMolecule, pos: &[[f64; 3]]) -> Option<String> {
    exploded(m, pos).or_else(|| {
        let species = &m.frame.species;
        (0..pos.len()).find_map(|i| {
            (i + 1..pos.len()).find_map(|j| {
                let d = distance(pos, i, j);
                let limit = 0.5 * (covalent_radius(species[i]) + covalent_radius(species[j]));
                (d < limit).then(|| {
                    format!(
                        "has atoms {} and {} ({}, {}) {d:.2} Å apart, on top of each other (two atoms \
                         are at least {limit:.2} Å apart here)",
                        i + 1,
                        j + 1,
                        symbol(species[i]).unwrap_or("?"),
                        symbol(species[j]).unwrap_or("?"),
                    )
                })
            })
        })
    })
}

fn distance(pos: &[[f64; 3]], i: usize, j: usize) -> f64 {
    (0..3)
        .map(|k| (pos[i][k] - pos[j][k]).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Why a generated structure is no structure at all (a model failure, e.g.
/// `--generation noise` with too few steps), or an input's (see [`broken`]):
/// a coordinate that is not finite, a bond longer than twice its covalent
/// length, or an atom farther from the centroid than a straight chain of the
/// molecule could reach (2 Å per atom, plus 10 Å).
pub fn exploded(m: &InputMolecule, pos: &[[f64; 3]]) -> Option<String> {
    if pos.iter().flatten().any(|x| !x.is_finite()) {
        return Some("has non-finite coordinates".into());
    }
    let species = &m.frame.species;
    for &(i, j, _) in &m.bonds {
        let d = distance(pos, i, j);
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

    /// No molecule of the shipped data (extended XYZ, charges not given; 63
    /// `[N+]`, 64 `[O-]`, aromatic rings as order 4) is called hypervalent, a
    /// drawing or broken, and only a charged carbon can look short of hydrogens.
    #[test]
    fn the_shipped_data_raises_no_finding() {
        let root = crate::repo_root();
        let mut short = Vec::new();
        for split in ["train", "val", "test"] {
            let path = root.join(format!("data/{split}.extxyz.gz"));
            let frames = physcon::data::read_extxyz(&path).unwrap();
            for f in frames {
                let smiles = f.smiles.clone().unwrap_or_default();
                let m = InputMolecule::new(f, 1, Vec::new(), None);
                let valence = Valence::of(&m);
                assert_eq!(valence.hypervalent(&m), None, "{smiles}");
                assert_eq!(is_flat(&m), None, "{smiles}");
                assert_eq!(broken(&m, &m.frame.pos), None, "{}: {smiles}", m.frame.mol_id);
                if valence.implicit_hydrogen(&m).is_some() {
                    short.push(smiles);
                }
            }
        }
        assert!(
            short.iter().all(|s| s.contains("[c-]") || s.contains("[C-]")),
            "{short:?}"
        );
    }

    /// Aromatic bonds (order 4) are 1 or 2: pyrrole's N-H and benzene's C-H are
    /// no hypervalent atoms, a ring carbon without its hydrogen is short.
    #[test]
    fn aromatic_bonds_are_one_or_two() {
        let molecule = |species: Vec<i64>, bonds: Vec<(usize, usize, u8)>| {
            let n = species.len();
            let frame = physcon::data::Frame {
                mol_id: "m".into(),
                smiles: None,
                level: None,
                energy: None,
                pos: vec![[0.0; 3]; n],
                species,
                forces: None,
                bonds,
            };
            InputMolecule::new(frame, 1, Vec::new(), None)
        };
        // Pyrrole: N1 C2 C3 C4 C5, H on each.
        let mut bonds = vec![(0, 1, 4), (1, 2, 4), (2, 3, 4), (3, 4, 4), (4, 0, 4)];
        bonds.extend((0..5).map(|a| (a, a + 5, 1)));
        let pyrrole = molecule(vec![7, 6, 6, 6, 6, 1, 1, 1, 1, 1], bonds.clone());
        let v = Valence::of(&pyrrole);
        assert_eq!(
            (v.hypervalent(&pyrrole), v.implicit_hydrogen(&pyrrole)),
            (None, None)
        );
        bonds.pop();
        let bare = molecule(vec![7, 6, 6, 6, 6, 1, 1, 1, 1], bonds);
        let found = Valence::of(&bare).implicit_hydrogen(&bare).unwrap();
        assert!(
            found.contains("carbon atom 5") && found.contains("3 of 4"),
            "{found}"
        );
        // A carbon with five single bonds is named, whatever its charge.
        let five = molecule(vec![6, 1, 1, 1, 1, 1], (1..6).map(|a| (0, a, 1)).collect());
        let (a, why) = Valence::of(&five).hypervalent(&five).unwrap();
        assert_eq!(a, 0);
        assert!(
            why.contains("adding up to 5, more than the 4 such an atom takes with any charge"),
            "{why}"
        );
    }

    /// The largest molecule the screener lets through fits one batch of its own.
    #[test]
    fn the_atom_limit_fits_the_pair_budget() {
        assert!(pairs(MAX_ATOMS) <= MAX_PAIRS && pairs(MAX_ATOMS + 1) > MAX_PAIRS);
    }
}
