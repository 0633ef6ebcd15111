//! Bond orders in the training data's convention: aromatic rings as order 4.
//!
//! The dataset took its bonds from RDKit's parse of each SMILES, which marks
//! aromatic rings (order 4); most SDF writers, RDKit's own included, write the
//! same rings in a Kekulé form (alternating 1 and 2). The model reads bond
//! orders as edge classes, so a Kekulé ring is a molecule it never saw: the
//! same benzene ring gave structures 0.28 Å apart under FIRE. [`aromatize`]
//! turns such rings into order 4 with RDKit's electron count, close enough
//! for the dataset's elements (H C N O F S Cl) that every molecule of the
//! shipped data comes back as RDKit wrote it (tested below).

/// Rings larger than this are not looked at (RDKit's default aromaticity
/// considers fused systems up to about this size through their envelopes).
const MAX_RING: usize = 10;

/// π electrons a ring atom gives, or `None` when it breaks aromaticity.
fn electrons(atom: usize, species: &[i64], adjacency: &[Vec<(usize, u8)>], in_ring: &[bool]) -> Option<u32> {
    let bonds = &adjacency[atom];
    let double_in_ring = bonds.iter().any(|&(b, o)| o == 2 && in_ring[b]);
    let double_outside = bonds.iter().find(|&&(b, o)| o == 2 && !in_ring[b]);
    match (species[atom], double_in_ring, double_outside) {
        (_, true, None) => Some(1),
        // A carbonyl-like exocyclic double bond takes the carbon's electron (2-pyridone is aromatic).
        (6, false, Some(&(b, _))) if matches!(species[b], 7 | 8 | 16) => Some(0),
        // A lone pair: pyrrole's N-H, furan's O, thiophene's S.
        (7, false, None) if bonds.len() <= 3 => Some(2),
        (8 | 16, false, None) if bonds.len() == 2 => Some(2),
        _ => None,
    }
}

/// Simple cycles of 5..=[`MAX_RING`] atoms through atoms marked `usable`, each once.
fn cycles(adjacency: &[Vec<(usize, u8)>], usable: &[bool]) -> Vec<Vec<usize>> {
    fn walk(
        path: &mut Vec<usize>,
        adjacency: &[Vec<(usize, u8)>],
        usable: &[bool],
        out: &mut Vec<Vec<usize>>,
    ) {
        let (start, last) = (path[0], path[path.len() - 1]);
        for &(next, _) in &adjacency[last] {
            // Each cycle once: it starts at its smallest atom and runs towards the smaller neighbour.
            if next == start && path.len() >= 5 && path[1] < last {
                out.push(path.clone());
            } else if next > start && usable[next] && !path.contains(&next) && path.len() < MAX_RING {
                path.push(next);
                walk(path, adjacency, usable, out);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    for start in (0..adjacency.len()).filter(|&a| usable[a]) {
        walk(&mut vec![start], adjacency, usable, &mut out);
    }
    out
}

/// Sets the bonds of Kekulé-written aromatic rings to order 4, the way the
/// training data writes them; returns how many bonds changed. A ring counts
/// as aromatic when its bonds are single or double and its atoms give
/// 4n + 2 π electrons (RDKit's rule: 1 for an atom with a double bond in the
/// ring system, 0 for a carbon with an exocyclic C=O/N/S, 2 for a lone-pair
/// N, O or S). Bonds already 4 stay.
pub fn aromatize(species: &[i64], bonds: &mut [(usize, usize, u8)]) -> usize {
    let n = species.len();
    let mut adjacency: Vec<Vec<(usize, u8)>> = vec![Vec::new(); n];
    for &(i, j, o) in bonds.iter() {
        if i < n && j < n {
            adjacency[i].push((j, o));
            adjacency[j].push((i, o));
        }
    }
    // Ring atoms of a Kekulé system: two or more neighbours by single or double bonds, no triple.
    let usable: Vec<bool> = adjacency
        .iter()
        .map(|b| {
            species_ok(b)
                && b.iter().filter(|&&(_, o)| o == 1 || o == 2).count() >= 2
                && b.iter().all(|&(_, o)| o != 3)
        })
        .collect();
    let rings: Vec<Vec<usize>> = cycles(&adjacency, &usable)
        .into_iter()
        .filter(|ring| {
            (0..ring.len()).all(|k| {
                let (a, b) = (ring[k], ring[(k + 1) % ring.len()]);
                adjacency[a].iter().any(|&(x, o)| x == b && (o == 1 || o == 2))
            })
        })
        .collect();
    let mut in_ring = vec![false; n];
    for &a in rings.iter().flatten() {
        in_ring[a] = true;
    }
    let mut aromatic: Vec<(usize, usize)> = Vec::new();
    for ring in &rings {
        let total: Option<u32> = ring
            .iter()
            .map(|&a| electrons(a, species, &adjacency, &in_ring))
            .sum();
        if total.is_some_and(|e| e % 4 == 2) {
            for k in 0..ring.len() {
                let (a, b) = (ring[k], ring[(k + 1) % ring.len()]);
                aromatic.push((a.min(b), a.max(b)));
            }
        }
    }
    let mut changed = 0;
    for bond in bonds.iter_mut() {
        if bond.2 != 4 && aromatic.contains(&(bond.0.min(bond.1), bond.0.max(bond.1))) {
            bond.2 = 4;
            changed += 1;
        }
    }
    changed
}

/// Whether the atom's bonds allow it in a Kekulé ring at all (no more than
/// one double bond: an allene-like centre is not aromatic).
fn species_ok(bonds: &[(usize, u8)]) -> bool {
    bonds.iter().filter(|&&(_, o)| o == 2).count() <= 1
}

#[cfg(test)]
mod tests {
    use super::aromatize;
    use physcon::data::read_extxyz;

    /// A Kekulé form of the aromatic (order 4) bonds, by backtracking: each
    /// aromatic atom short of its valence gets exactly one double bond.
    fn kekulize(species: &[i64], bonds: &[(usize, usize, u8)]) -> Option<Vec<(usize, usize, u8)>> {
        let n = species.len();
        let mut valence = vec![0u32; n];
        for &(i, j, o) in bonds {
            let v = if o == 4 { 1 } else { u32::from(o) };
            valence[i] += v;
            valence[j] += v;
        }
        let needs: Vec<bool> = (0..n)
            .map(|a| {
                let full = match species[a] {
                    6 => 4,
                    7 => 3,
                    8 | 16 => 2,
                    _ => 1,
                };
                bonds.iter().any(|&(i, j, o)| o == 4 && (i == a || j == a)) && valence[a] < full
            })
            .collect();
        let aromatic: Vec<usize> = (0..bonds.len()).filter(|&b| bonds[b].2 == 4).collect();
        fn assign(
            k: usize,
            aromatic: &[usize],
            bonds: &[(usize, usize, u8)],
            needs: &[bool],
            taken: &mut Vec<bool>,
            double: &mut Vec<bool>,
        ) -> bool {
            if k == aromatic.len() {
                return needs.iter().zip(taken.iter()).all(|(n, t)| n == t);
            }
            let (i, j, _) = bonds[aromatic[k]];
            if needs[i] && needs[j] && !taken[i] && !taken[j] {
                taken[i] = true;
                taken[j] = true;
                double[k] = true;
                if assign(k + 1, aromatic, bonds, needs, taken, double) {
                    return true;
                }
                taken[i] = false;
                taken[j] = false;
                double[k] = false;
            }
            assign(k + 1, aromatic, bonds, needs, taken, double)
        }
        let mut taken = vec![false; n];
        let mut double = vec![false; aromatic.len()];
        if !assign(0, &aromatic, bonds, &needs, &mut taken, &mut double) {
            return None;
        }
        let mut out = bonds.to_vec();
        for (k, &b) in aromatic.iter().enumerate() {
            out[b].2 = if double[k] { 2 } else { 1 };
        }
        Some(out)
    }

    /// Every molecule of the shipped data, written in a Kekulé form, comes
    /// back with exactly RDKit's aromatic bonds; molecules without aromatic
    /// rings are left alone.
    #[test]
    fn kekule_forms_of_the_dataset_come_back_as_rdkit_wrote_them() {
        let root = crate::repo_root();
        let (mut aromatic, mut plain) = (0, 0);
        let (mut charged, mut wrong) = (Vec::new(), Vec::new());
        for split in ["train", "val", "test"] {
            let frames = read_extxyz(root.join(format!("data/{split}.extxyz.gz"))).unwrap();
            let mut seen = std::collections::HashSet::new();
            for f in frames.iter().filter(|f| seen.insert(f.mol_id.clone())) {
                let mut same = f.bonds.clone();
                assert_eq!(
                    aromatize(&f.species, &mut same),
                    0,
                    "{}: {:?}",
                    f.mol_id,
                    f.smiles
                );
                if !f.bonds.iter().any(|b| b.2 == 4) {
                    plain += 1;
                    continue;
                }
                // The test's kekulizer knows no charges: charged rings ([n+], [c-]) are left out.
                let Some(mut kekule) = kekulize(&f.species, &f.bonds) else {
                    charged.push(f.smiles.clone().unwrap_or_default());
                    continue;
                };
                assert!(kekule.iter().all(|b| b.2 != 4));
                aromatize(&f.species, &mut kekule);
                if kekule != f.bonds {
                    wrong.push(f.smiles.clone().unwrap_or_default());
                }
                aromatic += 1;
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {aromatic} differ: {wrong:?}",
            wrong.len()
        );
        assert!(
            aromatic > 100 && plain > 100,
            "{aromatic} aromatic, {plain} plain"
        );
        assert!(charged.len() * 50 < aromatic, "{charged:?}");
        println!(
            "{aromatic} aromatic molecules, {plain} without aromatic rings, {} charged left out: {charged:?}",
            charged.len()
        );
    }

    /// Rings RDKit does not call aromatic stay as written.
    #[test]
    fn non_aromatic_rings_stay() {
        // Cyclohexene C6H10 heavy-atom skeleton (hydrogens left out: only the ring matters).
        let species = [6; 6];
        let mut ring = vec![(0, 1, 2), (1, 2, 1), (2, 3, 1), (3, 4, 1), (4, 5, 1), (5, 0, 1)];
        assert_eq!(aromatize(&species, &mut ring), 0);
        // 1,4-benzoquinone: two exocyclic C=O leave 4 π electrons.
        let species = [6, 6, 6, 6, 6, 6, 8, 8];
        let mut quinone = vec![
            (0, 1, 1),
            (1, 2, 2),
            (2, 3, 1),
            (3, 4, 1),
            (4, 5, 2),
            (5, 0, 1),
            (0, 6, 2),
            (3, 7, 2),
        ];
        assert_eq!(aromatize(&species, &mut quinone), 0);
        // Cyclooctatetraene: 8 π electrons.
        let species = [6; 8];
        let mut cot: Vec<(usize, usize, u8)> = (0..8)
            .map(|k| (k, (k + 1) % 8, if k % 2 == 0 { 2 } else { 1 }))
            .collect();
        assert_eq!(aromatize(&species, &mut cot), 0);
        // Benzene in its Kekulé form does become aromatic.
        let species = [6; 6];
        let mut benzene: Vec<(usize, usize, u8)> = (0..6)
            .map(|k| (k, (k + 1) % 6, if k % 2 == 0 { 2 } else { 1 }))
            .collect();
        assert_eq!(aromatize(&species, &mut benzene), 6);
    }
}
