"""Ids name what they point at: one prefix per kind, random and unique."""

from __future__ import annotations

import re
from typing import get_args

from core.ids import PREFIXES, IdKind, new_id


def test_every_kind_has_its_own_prefix() -> None:
    assert set(PREFIXES) == set(get_args(IdKind))
    assert len(set(PREFIXES.values())) == len(PREFIXES)


def test_new_ids_carry_the_kind_prefix_and_do_not_repeat() -> None:
    ids = [new_id("dataset") for _ in range(1000)]
    assert all(re.fullmatch(r"ds_[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert new_id("conversation").startswith("cv_")
