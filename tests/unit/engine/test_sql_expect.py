"""The ``expect`` of a sql health check: numeric comparisons, or the exact text."""

from decimal import Decimal

import pytest

from safehold.engine.postgres import compare


@pytest.mark.parametrize("value, expect, passed", [
    (3, ">0", True), (0, ">0", False), (Decimal("2.50"), ">=2.5", True), (5, "=5", True), (5, "!=5", False),
    (4, "<5", True), (5, "<=4", False), ("ok", "ok", True), ("OK", "ok", False), (None, ">0", False),
    ("abc", ">0", False), (True, "=1", False),
])
def test_compare(value, expect, passed):
    assert compare(value, expect)[0] is passed


def test_the_detail_says_what_came_back_and_what_was_expected():
    assert compare(0, ">0", "select count(*) from orders")[1] == "'select count(*) from orders' returned 0, expected >0"
    assert compare(None, ">0")[1].startswith("'' returned no row")
