"""Kubernetes resource quantities (``500m``, ``1Gi``, ``1e3``) as apimachinery reads them.

A quantity is parsed when the object is decoded, so ``512MB`` is refused with
apimachinery's own message before any validation runs, and what is stored is the canonical
form the real server writes back (``0.5`` becomes ``500m``, ``1024Mi`` becomes ``1Gi``).
The rules follow ``k8s.io/apimachinery/pkg/api/resource`` (``ParseQuantity`` and
``CanonicalizeBytes``).
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal

#: apimachinery's splitREString, quoted in its ErrFormatWrong message.
SPLIT_RE = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
FORMAT_WRONG = f"quantities must match the regular expression '{SPLIT_RE}'"
SUFFIX_WRONG = "unable to parse quantity's suffix"

_DECIMAL_SUFFIXES = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_BY_EXPONENT = {exp: suffix for suffix, exp in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_POWER = {power // 10: suffix for suffix, power in _BINARY_SUFFIXES.items()}
_CONTEXT = decimal.Context(prec=80)
_NANO = Decimal("1e-9")
_SUFFIX_CHARS = set("eEinumkKMGTP")


class QuantityError(ValueError):
    """A string apimachinery's ParseQuantity refuses; the message is its own."""


@dataclass(frozen=True)
class Quantity:
    value: Decimal
    #: "DecimalSI", "BinarySI" or "DecimalExponent", as the suffix chose.
    format: str

    def __str__(self) -> str:
        return canonical(self)


def _split(text: str) -> tuple[bool, str, str, str]:
    """apimachinery's parseQuantityString: sign, numerator, denominator and suffix."""
    positive, pos, end = True, 0, len(text)
    if text[0] in "+-":
        positive = text[0] == "+"
        pos = 1
    while pos < end and text[pos] == "0":
        pos += 1
    start = pos
    while pos < end and text[pos].isdigit() and text[pos].isascii():
        pos += 1
    numerator = text[start:pos] or "0"
    denominator = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos].isdigit() and text[pos].isascii():
            pos += 1
        denominator = text[start:pos]
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos].isdigit() and text[pos].isascii():
        pos += 1
    if pos < end:
        raise QuantityError(FORMAT_WRONG)
    return positive, numerator, denominator, text[suffix_start:end]


def parse(text: str) -> Quantity:
    """The quantity ``text`` stands for; QuantityError with apimachinery's message if none."""
    if not text:
        raise QuantityError(FORMAT_WRONG)
    if text == "0":
        return Quantity(Decimal(0), "DecimalSI")
    positive, numerator, denominator, suffix = _split(text)
    number = Decimal(f"{numerator}.{denominator or '0'}", _CONTEXT)
    if suffix in _DECIMAL_SUFFIXES:
        value, fmt = number.scaleb(_DECIMAL_SUFFIXES[suffix], _CONTEXT), "DecimalSI"
    elif suffix in _BINARY_SUFFIXES:
        value, fmt = _CONTEXT.multiply(number, Decimal(2) ** _BINARY_SUFFIXES[suffix]), "BinarySI"
    elif len(suffix) > 1 and suffix[0] in "eE":
        try:
            exponent = int(suffix[1:])
        except ValueError as exc:
            raise QuantityError(SUFFIX_WRONG) from exc
        value, fmt = number.scaleb(exponent, _CONTEXT), "DecimalExponent"
    else:
        raise QuantityError(SUFFIX_WRONG)
    if value != 0:
        # Non-zero amounts round up to the nearest nano, as apimachinery does.
        value = value.quantize(_NANO, rounding=decimal.ROUND_UP, context=_CONTEXT)
    if fmt == "BinarySI" and 0 < value < 1:
        fmt = "DecimalSI"
    return Quantity(value if positive else -value, fmt)


def from_json(value: object) -> Quantity:
    """A quantity as it arrives in JSON: a string or a bare number."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise QuantityError(FORMAT_WRONG)
    text = value if isinstance(value, str) else repr(value)
    return parse(text.strip())


def _decimal_parts(value: Decimal) -> tuple[int, int]:
    """(mantissa, exponent) with the exponent a multiple of 3 and no spare zeros."""
    sign, digits, exponent = value.normalize(_CONTEXT).as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)) or "0")
    shift = exponent % 3
    mantissa, exponent = mantissa * 10**shift, exponent - shift
    return (-mantissa if sign else mantissa), exponent


def canonical(q: Quantity) -> str:
    """apimachinery's canonical form: what the real server writes back."""
    if q.value == 0:
        return "0"
    fmt = q.format
    if fmt == "BinarySI" and (-1024 < q.value < 1024 or q.value != q.value.to_integral_value()):
        fmt = "DecimalSI"
    if fmt == "BinarySI":
        amount, power = int(q.value), 0
        while amount % 1024 == 0 and power < 6:
            amount //= 1024
            power += 1
        return f"{amount}{_BINARY_BY_POWER.get(power, '')}" if power else str(amount)
    mantissa, exponent = _decimal_parts(q.value)
    if fmt == "DecimalExponent":
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    while exponent > 18:
        mantissa, exponent = mantissa * 1000, exponent - 3
    return f"{mantissa}{_DECIMAL_BY_EXPONENT[exponent]}"


def milli(q: Quantity) -> int:
    """The value in thousandths, rounded up (apimachinery's MilliValue)."""
    return int((q.value * 1000).to_integral_value(rounding=decimal.ROUND_CEILING))
