"""Cron next-fire times: the C++ implementation against croniter on random expressions (UTC).

DST behaviour is tested in C++ (src/corral/base/cron_test.cc) against a table, since croniter's
own handling of gaps and repeated hours differs between its versions.
"""
import datetime
import random

import pytest
from croniter import croniter

from corral import _core
from corral.exceptions import InvalidArgumentError

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def random_field(rng, lo, hi, names=None):
    kind = rng.choice(["star", "num", "range", "list", "step", "range_step"])
    def value():
        v = rng.randint(lo, hi)
        return names[v - lo] if names and rng.random() < 0.3 else str(v)
    if kind == "star":
        return "*"
    if kind == "num":
        return value()
    if kind == "range":  # croniter 7 reads a one-value range like "23-23" as "*": not generated
        a = rng.randint(lo, hi - 1)
        b = rng.randint(a + 1, hi)
        return f"{a}-{b}"
    if kind == "list":
        return ",".join(sorted({str(rng.randint(lo, hi)) for _ in range(rng.randint(2, 4))}, key=int))
    if kind == "step":
        return f"*/{rng.randint(2, max(2, (hi - lo) // 2))}"
    a = rng.randint(lo, hi - 1)
    b = rng.randint(a + 1, hi)
    return f"{a}-{b}/{rng.randint(1, 5)}"


def random_expr(rng):
    dom, dow = random_field(rng, 1, 28), random_field(rng, 0, 6, DAYS)
    # When both day fields are restricted, Vixie cron ORs them; croniter 7 decides that differently
    # from one spelling to the next ("0-6" vs "0-6/1", "*/5" vs "*/13"). Corral follows Vixie cron,
    # tested in the C++ table; here one of the two is always "*".
    if rng.random() < 0.5:
        dom = "*"
    else:
        dow = "*"
    return " ".join([random_field(rng, 0, 59), random_field(rng, 0, 23), dom, random_field(rng, 1, 12, MONTHS), dow])


def test_next_fire_matches_croniter_on_random_expressions():
    seed = 20261126
    rng = random.Random(seed)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    checked = 0
    for _ in range(2000):
        expr = random_expr(rng)
        after = start + datetime.timedelta(minutes=rng.randint(0, 3 * 365 * 24 * 60))
        expected = croniter(expr, after).get_next(datetime.datetime)
        got_ns = _core.cron_next(expr, "UTC", int(after.timestamp()) * 1_000_000_000)
        got = datetime.datetime.fromtimestamp(got_ns / 1e9, datetime.timezone.utc)
        assert got == expected, f"seed {seed}: '{expr}' after {after}: corral {got}, croniter {expected}"
        checked += 1
    assert checked == 2000


def test_zones_shift_the_slot():
    after = int(datetime.datetime(2026, 11, 26, tzinfo=datetime.timezone.utc).timestamp()) * 1_000_000_000
    got = _core.cron_next("0 2 * * *", "Asia/Dhaka", after)
    assert datetime.datetime.fromtimestamp(got / 1e9, datetime.timezone.utc) == \
        datetime.datetime(2026, 11, 26, 20, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("expr,tz,message", [
    ("61 * * * *", "UTC", "minute 61 is out of range"),
    ("0 2 * * *", "Asia/Nowhere", "unknown time zone 'Asia/Nowhere'"),
])
def test_bad_expressions_and_zones_are_clear(expr, tz, message):
    with pytest.raises(InvalidArgumentError, match=message):
        _core.cron_next(expr, tz, 0)


def test_one_value_range():
    # croniter 7 answers 00:27 here; "23-23" is hour 23 (Vixie cron, and our table test).
    after = int(datetime.datetime(2028, 10, 8, 6, 2, tzinfo=datetime.timezone.utc).timestamp()) * 1_000_000_000
    got = _core.cron_next("27-54 23-23 * 1,9,10,11 1-4", "UTC", after)
    assert datetime.datetime.fromtimestamp(got / 1e9, datetime.timezone.utc) == \
        datetime.datetime(2028, 10, 9, 23, 27, tzinfo=datetime.timezone.utc)
