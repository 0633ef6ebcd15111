"""Units and the Boltzmann constant.

physcon works in Å, eV, eV/Å and K. A user with other units passes kT in the
unit of their energies.
"""

from __future__ import annotations

from . import _checks as check

#: Boltzmann's constant in eV/K (CODATA 2018, exact).
KB_EV_PER_K = 8.617333262e-5


def kelvin_to_kt(kelvin: float) -> float:
    """kT in eV at a temperature in kelvin: ``k_B T`` with ``k_B = 8.617333262e-5 eV/K``
    (``kelvin_to_kt(300.0)`` = 0.025852 eV)."""
    return check.positive("kelvin", kelvin) * KB_EV_PER_K
