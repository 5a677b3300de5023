"""The struct forms the codecs run are the construct declarations, byte for byte."""

from __future__ import annotations

import math
from typing import Any

import construct
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memlease_native import codec as native_codec
from memlease_native import layout as native_layout
from memlease_network import FORMAT as NETWORK_FORMAT
from memlease_uuid import FORMAT as UUID_FORMAT
from memlease_wire.derive import DerivedLayout, derive
from memlease_wire.network_layout import HEADER as NETWORK_HEADER

INT_RANGES = {
    "b": (-(2**7), 2**7 - 1),
    "B": (0, 2**8 - 1),
    "h": (-(2**15), 2**15 - 1),
    "H": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "l": (-(2**31), 2**31 - 1),
    "I": (0, 2**32 - 1),
    "L": (0, 2**32 - 1),
    "q": (-(2**63), 2**63 - 1),
    "Q": (0, 2**64 - 1),
}


def _declarations() -> dict[str, tuple[construct.Struct, ...]]:
    found: dict[str, tuple[construct.Struct, ...]] = {}
    for name, value in vars(native_layout).items():
        if (
            isinstance(value, construct.Struct)
            and not name.endswith("FRAME")
            and name not in ("RENEW_MANY", "IDS", "GRANTED_MANY", "IDS_REPLY")  # id lists
        ):
            found[f"native.{name}"] = (value,)
            if value is not native_layout.HEADER:
                found[f"native.HEADER+{name}"] = (native_layout.HEADER, value)
    for fmt in (NETWORK_FORMAT, UUID_FORMAT):
        for name, value in vars(fmt.layouts).items():
            # Id lists (a count and the ids) do not derive: tests/test_id_lists.py checks them.
            if isinstance(value, construct.Struct) and name not in (
                "frame",
                "ids",
                "renew_many",
                "granted_many",
            ):
                found[f"{fmt.protocol}.{name}"] = (value,)
                found[f"{fmt.protocol}.HEADER+{name}"] = (NETWORK_HEADER, value)
    return found


DECLARATIONS = _declarations()


def _field_values(field: Any) -> st.SearchStrategy[Any]:
    if isinstance(field, construct.Const):
        return st.just(field.value)
    if isinstance(field, construct.FormatField):
        code = field.fmtstr[1:]
        if code == "d":
            return st.floats(allow_nan=False)
        low, high = INT_RANGES[code]
        return st.integers(low, high)
    if isinstance(field, construct.Bytes):
        return st.binary(min_size=field.length, max_size=field.length)
    if isinstance(field, construct.Prefixed):
        return st.binary(max_size=100)
    raise AssertionError(f"no strategy for {field!r}")


def _values(declarations: tuple[construct.Struct, ...]) -> st.SearchStrategy[list[Any]]:
    fields = [sub for d in declarations for sub in d.subcons]
    return st.tuples(*(_field_values(sub.subcon) for sub in fields)).map(list)


def _pack(layout: DerivedLayout, values: list[Any]) -> bytes:
    if layout.tail is None:
        return layout.fixed.pack(*values)
    tail = values[-1]
    return layout.fixed.pack(*values[:-1], len(tail)) + tail


@pytest.mark.parametrize("name", sorted(DECLARATIONS))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_struct_form_builds_and_parses_as_the_declaration(name: str, data: st.DataObject) -> None:
    declarations = DECLARATIONS[name]
    layout = derive(*declarations)
    values = data.draw(_values(declarations))
    names = [sub.name for d in declarations for sub in d.subcons]
    packed = _pack(layout, values)

    built, at = b"", 0
    for declaration in declarations:
        count = len(declaration.subcons)
        built += declaration.build(
            dict(zip(names[at : at + count], values[at : at + count], strict=True))
        )
        at += count
    assert packed == built

    unpacked = list(layout.fixed.unpack_from(packed))
    if layout.tail is not None:
        unpacked[-1] = packed[layout.fixed.size :]
    parsed: list[Any] = []
    offset = 0
    for declaration in declarations:
        container = declaration.parse(packed[offset:])
        parsed += [container[sub.name] for sub in declaration.subcons]
        if declaration is not declarations[-1]:
            offset += declaration.sizeof()
    for got, want in zip(unpacked, parsed, strict=True):
        assert got == want or (isinstance(got, float) and math.isnan(got) and math.isnan(want))


def test_codecs_use_the_struct_forms_of_their_own_declarations() -> None:
    assert native_codec.S_HEADER.format == "=lq"
    assert native_codec.F_ID_AND_DATA.format == "=lqlq"
    assert NETWORK_FORMAT.f_id.format == ">BBHLL"
    assert UUID_FORMAT.f_id.format == ">BBHL16s"


@pytest.mark.parametrize(
    "declaration",
    [
        construct.Struct("a" / construct.Int32ub, "b" / construct.Int32ul),
        construct.Struct(
            "data" / construct.Prefixed(construct.Int8ub, construct.GreedyBytes),
            "after" / construct.Int8ub,
        ),
        construct.Struct("text" / construct.CString("utf8")),
    ],
    ids=["mixed-order", "tail-not-last", "not-fixed"],
)
def test_underivable_declarations_are_refused(declaration: construct.Struct) -> None:
    with pytest.raises(TypeError):
        derive(declaration)
