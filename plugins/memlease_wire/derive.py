"""Struct forms derived from construct declarations.

The construct declarations are the single source of truth for every layout; interpreting them
costs microseconds per message, so the codecs run ``struct`` forms computed here from those
same declarations (and the tests check, with hypothesis, that both agree byte for byte).

A derivable declaration is a ``Struct`` of fixed-width number fields (``Int32ub``, ``Float64l``
...), fixed-length ``Bytes(n)`` and ``Const`` fields, optionally ending in one
``Prefixed(<number field>, GreedyBytes)``: a length followed by that many bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import construct


@dataclass(frozen=True)
class DerivedLayout:
    """A declaration and its struct form.

    ``fixed`` packs the fixed-width fields of all declarations, end to end, named in
    ``fields``; when the last ends in a length-prefixed tail, its length is the last value
    of ``fixed`` and ``tail`` names the field holding the bytes.
    """

    declarations: tuple[construct.Struct, ...]
    fixed: struct.Struct
    fields: tuple[str, ...]
    tail: str | None

    @property
    def size(self) -> int:
        """Bytes before the tail (all of them, when there is no tail)."""
        return self.fixed.size


def _format_of(field: Any) -> tuple[str, str]:
    """(byte order, struct code) of one fixed-width construct field."""
    if isinstance(field, construct.FormatField):
        fmt: str = field.fmtstr
        return fmt[0], fmt[1:]
    if isinstance(field, construct.Const):
        return _format_of(field.subcon)
    if isinstance(field, construct.Bytes) and isinstance(field.length, int):
        return "", f"{field.length}s"
    raise TypeError(f"cannot derive a struct form from {field!r}")


def derive(*declarations: construct.Struct) -> DerivedLayout:
    """The struct form of ``declarations`` laid end to end (a header and a payload, say);
    TypeError if they are not of the derivable shape."""
    orders: set[str] = set()
    codes: list[str] = []
    names: list[str] = []
    tail: str | None = None
    subcons = [sub for declaration in declarations for sub in declaration.subcons]
    for index, named in enumerate(subcons):
        if not isinstance(named, construct.Renamed) or named.name is None:
            raise TypeError(f"every field must be named: {named!r}")
        field = named.subcon
        if isinstance(field, construct.Prefixed):
            if index != len(subcons) - 1 or field.subcon is not construct.GreedyBytes:
                raise TypeError(f"{named.name}: only a final Prefixed(..., GreedyBytes) derives")
            order, code = _format_of(field.lengthfield)
            tail = named.name
            names.append(f"{named.name}.length")
        else:
            order, code = _format_of(field)
            names.append(named.name)
        if order:
            orders.add(order)
        codes.append(code)
    if len(orders) > 1:
        raise TypeError(f"mixed byte orders {sorted(orders)} in one declaration")
    order = orders.pop() if orders else "="
    return DerivedLayout(
        tuple(declarations), struct.Struct(order + "".join(codes)), tuple(names), tail
    )
