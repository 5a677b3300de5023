"""Messages are values (memlease/core/messages.py): equal when their fields are, pickled and
copied whole, and with no attribute but their fields, interpreted or compiled alike."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codecs import exchange

from memlease.core.messages import (
    Data,
    Done,
    GetRequest,
    Op,
    Reply,
    Request,
    fields_of,
)


@settings(max_examples=80, deadline=None)
@given(pair=st.sampled_from(["native", "network", "uuid"]).flatmap(exchange))
def test_every_message_pickles_and_copies_to_an_equal_one(pair: tuple[Request, Reply]) -> None:
    for message in pair:
        for again in (
            pickle.loads(pickle.dumps(message)),
            copy.copy(message),
            copy.deepcopy(message),
        ):
            assert type(again) is type(message)
            assert again == message and repr(again) == repr(message)
            assert fields_of(again) == fields_of(message)
        with pytest.raises(AttributeError):
            message.colour = "red"  # type: ignore[union-attr]


def test_messages_are_equal_by_fields_and_type_and_never_hashed() -> None:
    assert Done(Op.SET, 1, 2) == Done(Op.SET, 1, 2) != Done(Op.SET, 1, 3)
    assert GetRequest(1) != Data(Op.GET, 1, b"")
    assert GetRequest(1) != (1,)
    with pytest.raises(TypeError):
        hash(GetRequest(1))
