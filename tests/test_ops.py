"""The table of op kinds: tuple-valued ops and the names of their elements."""

from __future__ import annotations

import pytest

from fxns.ops import element_name, is_tuple_element


@pytest.mark.parametrize(
    ("kind", "path", "is_tuple"),
    [
        ("lstm", (), True),
        ("lstm", (0,), False),
        ("lstm", (1,), True),
        ("lstm", (1, 0), False),
        ("gru", (1,), False),
        ("chunk", (), True),
        ("chunk", (3,), False),
        ("conv2d", (), False),
    ],
)
def test_a_getitem_selects_only_from_tuple_elements(
    kind: str, path: tuple[int, ...], is_tuple: bool
) -> None:
    assert is_tuple_element(kind, path) is is_tuple


@pytest.mark.parametrize(
    ("kind", "path", "name"),
    [
        ("lstm", (0,), "output"),
        ("lstm", (1, 0), "h_n"),
        ("lstm", (1, 1), "c_n"),
        ("gru", (1,), "h_n"),
        ("lstm_cell", (1,), "c_1"),
        ("chunk", (2,), "2"),
        ("MyLeaf", (1, 0), "1.0"),
    ],
)
def test_elements_are_named_as_pytorch_documents_them(
    kind: str, path: tuple[int, ...], name: str
) -> None:
    assert element_name(kind, path) == name
