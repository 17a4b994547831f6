"""Kubernetes resource quantities ("3Gi", "3500m", "1.5", "2e3").

Shared by the hardware profiles, the API validation, and the scheduler, so that every part
reads "64Ki" the same way. The grammar follows Kubernetes' ``resource.Quantity``:
a signed decimal number, then an optional suffix that is either binary (Ki Mi Gi Ti Pi Ei),
decimal SI (n u m k M G T P E), or a decimal exponent (e3, E-2).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

__all__ = [
    "QuantityError",
    "format_bytes",
    "parse_bytes",
    "parse_cpu_millis",
    "parse_quantity",
]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

# Number: optional sign, digits with an optional fraction (or a bare fraction like ".5").
# Suffix: binary, SI, or exponent. "E" alone is exa; "E3" is an exponent (as in Kubernetes).
_QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE]?)$"
)


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity; the message names the offending value."""


def _to_decimal(value: str | int | float) -> Decimal:
    # Manifests in YAML/JSON may carry plain numbers (cpu: 2); accept them as-is.
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}: expected a string or number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise QuantityError(f"invalid quantity {value!r}: expected a string or number")
    match = _QUANTITY_RE.match(value)
    if match is None:
        raise QuantityError(
            f"invalid quantity {value!r}: expected a number with an optional suffix "
            "(Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E, or an exponent like e3)"
        )
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex already rules this out
        raise QuantityError(f"invalid quantity {value!r}") from exc
    suffix = match["suffix"]
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number.scaleb(int(suffix[1:]))


def parse_quantity(value: str | int | float) -> int | float:
    """Parse a quantity to its value in base units: an ``int`` when exact, else a ``float``.

    >>> parse_quantity("64Ki"), parse_quantity("3500m"), parse_quantity("1.5")
    (65536, 3.5, 1.5)
    """
    number = _to_decimal(value)
    if number == number.to_integral_value():
        return int(number)
    return float(number)


def parse_cpu_millis(value: str | int | float) -> int:
    """CPU in millicores ("3500m" -> 3500, "2" -> 2000); rounded up, as Kubernetes does."""
    millis = (_to_decimal(value) * 1000).to_integral_value(rounding=ROUND_CEILING)
    return int(millis)


def parse_bytes(value: str | int | float) -> int:
    """A memory or storage size in whole bytes ("3Gi" -> 3221225472); rounded up."""
    return int(_to_decimal(value).to_integral_value(rounding=ROUND_CEILING))


def format_bytes(n: int) -> str:
    """The shortest exact binary quantity for ``n`` bytes (65536 -> "64Ki")."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n != 0 and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
