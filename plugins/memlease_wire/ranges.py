"""Which number of a request does not fit its format's field, and that field's range, read
from the construct declaration: the error a user sees names the value and what is allowed."""

from __future__ import annotations

import struct

import construct

from memlease.core.errors import ProtocolError
from memlease.core.messages import Request

_WHAT = {
    "size": ("lease size", " B"),
    "ttl_ms": ("ttl", " ms"),
    "offset": ("offset", " B"),
    "length": ("length", " B"),
}


def field_range(field: object) -> tuple[int, int] | None:
    """(lowest, highest) of an integer construct field; None for any other field."""
    if not isinstance(field, construct.FormatField):
        return None
    code = field.fmtstr[1:]
    if code not in "bBhHiIlLqQ":
        return None
    bits = 8 * struct.calcsize("=" + code)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if code.islower() else (0, 2**bits - 1)


def out_of_range(protocol: str, request: Request, layout: construct.Struct) -> ProtocolError:
    """The error for ``request``, whose numbers did not all fit ``layout`` (its payload's
    declaration): it names the first number outside its field and the field's range."""
    for sub in layout.subcons:
        value = getattr(request, sub.name or "", None)
        limits = field_range(getattr(sub, "subcon", sub))
        if type(value) is not int or limits is None:
            continue
        lowest, highest = limits
        if not lowest <= value <= highest:
            what, unit = _WHAT.get(sub.name or "", (sub.name, ""))
            op = request.op.value
            what = what if what.startswith(op) else f"{op} {what}"
            return ProtocolError(
                f"{protocol}: {what} {value}{unit} is outside what the "
                f"{protocol} format carries ({max(lowest, 0)} to {highest}{unit})"
            )
    return ProtocolError(f"{protocol}: {type(request).__name__} does not fit the format's fields")
