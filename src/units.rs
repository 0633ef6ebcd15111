//! Units and the Boltzmann constant.
//!
//! physcon works in Å, eV, eV/Å and K. A user with other units passes kT in
//! the unit of their energies.

use crate::check;
use crate::error::Result;

/// Boltzmann's constant in eV/K (CODATA 2018, exact).
pub const KB_EV_PER_K: f64 = 8.617_333_262e-5;

/// A thermodynamic temperature, for turning kelvin into kT.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// let kt = physcon::Temperature::kelvin(300.0)?.kt();
/// assert!((kt - 0.025852).abs() < 1e-6); // eV
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Temperature {
    kelvin: f64,
}

impl Temperature {
    /// A temperature in kelvin.
    ///
    /// # Errors
    /// [`crate::Error::NonPositive`] unless positive and finite.
    pub fn kelvin(kelvin: f64) -> Result<Self> {
        Ok(Self {
            kelvin: check::positive("kelvin", kelvin)?,
        })
    }

    /// The temperature whose kT is `kt` eV.
    ///
    /// # Errors
    /// [`crate::Error::NonPositive`] unless positive and finite.
    pub fn from_kt(kt: f64) -> Result<Self> {
        Ok(Self {
            kelvin: check::positive("kt", kt)? / KB_EV_PER_K,
        })
    }

    /// The temperature in kelvin.
    pub fn as_kelvin(&self) -> f64 {
        self.kelvin
    }

    /// kT in eV.
    pub fn kt(&self) -> f64 {
        self.kelvin * KB_EV_PER_K
    }
}
