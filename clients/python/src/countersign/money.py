"""Money as integer minor units, from the decimal text people write: never through a floating-point number."""

from __future__ import annotations

import re

# ISO 4217 minor-unit digits where they are not 2 (the same table as the server's Policy/Currency.swift).
_DIGITS_OTHER_THAN_2 = {
    "BHD": 3, "BIF": 0, "CLF": 4, "CLP": 0, "DJF": 0, "GNF": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0, "KMF": 0,
    "KRW": 0, "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0, "RWF": 0, "TND": 3, "UGX": 0, "UYI": 0, "UYW": 4, "VND": 0,
    "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
}  # fmt: skip
_DECIMAL = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?")


def minor_unit_digits(currency: str) -> int:
    """2 for USD, 0 for JPY, 3 for KWD."""
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise ValueError(f"'{currency}' is not a currency code (three capital letters, e.g. USD)")
    return _DIGITS_OTHER_THAN_2.get(currency, 2)


def to_minor_units(amount: str, currency: str) -> int:
    """``"12.50", "USD"`` → 1250. Refuses what would have to be guessed: more fraction digits than the currency
    has (``"12.505"`` USD), signs, exponents, separators, spaces, and floats."""
    if not isinstance(amount, str):
        raise TypeError("give the amount as a decimal string such as '12.50', never a float")
    digits = minor_unit_digits(currency)
    match = _DECIMAL.fullmatch(amount)
    if match is None:
        raise ValueError(f"'{amount}' is not a plain decimal amount such as 12.50")
    fraction = match.group("fraction") or ""
    if len(fraction) > digits:
        raise ValueError(f"{currency} has {digits} decimal place(s); '{amount}' has {len(fraction)}")
    return int(match.group("whole") + fraction.ljust(digits, "0"))


def format_minor_units(minor_units: int, currency: str) -> str:
    """1250, "USD" → ``"12.50 USD"``."""
    digits = minor_unit_digits(currency)
    if digits == 0:
        return f"{minor_units} {currency}"
    sign = "-" if minor_units < 0 else ""
    whole, fraction = divmod(abs(minor_units), 10**digits)
    return f"{sign}{whole}.{fraction:0{digits}d} {currency}"
