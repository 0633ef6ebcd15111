//! Chemical symbols of the elements 1..=118.

const SYMBOLS: [&str; 118] = [
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K",
    "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr",
    "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe",
    "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu",
    "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra",
    "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db",
    "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
];

/// The atomic number of a chemical symbol (case-sensitive, as written by ASE).
pub fn atomic_number(symbol: &str) -> Option<i64> {
    SYMBOLS.iter().position(|&s| s == symbol).map(|k| k as i64 + 1)
}

/// The chemical symbol of atomic number `z` in 1..=118.
pub fn symbol(z: i64) -> Option<&'static str> {
    usize::try_from(z)
        .ok()
        .and_then(|z| z.checked_sub(1))
        .and_then(|k| SYMBOLS.get(k))
        .copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn symbols_round_trip() {
        for z in 1..=118 {
            assert_eq!(super::atomic_number(super::symbol(z).unwrap()), Some(z));
        }
        assert_eq!(super::atomic_number("Cl"), Some(17));
        assert_eq!(super::atomic_number("Xx"), None);
        assert_eq!(super::symbol(0), None);
        assert_eq!(super::symbol(119), None);
    }
}
