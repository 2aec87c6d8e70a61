"""Time an attacker needs to send an inversion's queries through the guard's rate limits, on hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from privaudit.attacks.inversion.evaluate import seconds_at_limit, time_to_reconstruct

GUARD_LIKE = "20/second;120/minute;20000/day"


def one_record_at_a_time(queries: int, rates: tuple[tuple[int, float], ...]) -> float:
    """The schedule written out record by record: each goes once every window has room for it."""
    times: list[float] = []
    for k in range(queries):
        t = times[-1] if times else 0.0
        for n, w in rates:
            if k >= n:
                t = max(t, times[k - n] + w)
        times.append(t)
    return times[-1] if times else 0.0


def test_rate_strings_are_read_as_the_guard_reads_them() -> None:
    # The string goes through privaudit.ci.controls.parse_rates, the guard's own reader.
    assert seconds_at_limit(500, GUARD_LIKE) == seconds_at_limit(500, [(20, 1.0), (120, 60.0), (20000, 86400.0)])
    assert seconds_at_limit(31, "10 per second, 100/2 minutes|1000/day") == 3.0
    assert seconds_at_limit(101, "10 per second, 100/2 minutes|1000/day") == 120.0
    with pytest.raises(ValueError, match="is not a rate string"):
        seconds_at_limit(10, "20/sekond")


def test_seconds_at_limit_hand_computed() -> None:
    # 20/second alone: records 0-19 at t=0, 20-39 at t=1, ...: the 120th record goes at 5 s.
    assert seconds_at_limit(120, "20/second;120/minute") == 5.0
    # The minute window is then full: record 121 waits for the first record to age out, at 60 s.
    assert seconds_at_limit(121, "20/second;120/minute") == 60.0
    # Records 121-140 at 60 s, 141 at 61 s (the second window again).
    assert seconds_at_limit(140, "20/second;120/minute") == 60.0
    assert seconds_at_limit(141, "20/second;120/minute") == 61.0
    # 20,000 records: 166 full minutes, then 79 more records at 20 per second (3 s).
    assert seconds_at_limit(20000, GUARD_LIKE) == 166 * 60 + 3
    # One more and the daily cap binds: the 20,001st record waits a day after the first.
    assert seconds_at_limit(20001, GUARD_LIKE) == 86400.0
    assert seconds_at_limit(40000, GUARD_LIKE) == 86400.0 + 166 * 60 + 3
    # A single limit: bursts of 100 at minute 0, 1, ..., 59.
    assert seconds_at_limit(6000, "100/minute") == 59 * 60
    assert seconds_at_limit(6000, [(100, 60.0)]) == 59 * 60
    # The uniform-rate figure differs by the first burst only.
    assert time_to_reconstruct(6000, 100) == 60 * 60
    assert seconds_at_limit(0, GUARD_LIKE) == 0.0 and seconds_at_limit(1, GUARD_LIKE) == 0.0
    assert seconds_at_limit(20, GUARD_LIKE) == 0.0 and seconds_at_limit(21, GUARD_LIKE) == 1.0


@pytest.mark.parametrize("rates", [((3, 1.0),), ((3, 1.0), (7, 5.0)), ((4, 2.0), (5, 3.0), (11, 20.0)),
                                   ((7, 5.0), (3, 1.0))])
def test_block_computation_matches_the_record_by_record_schedule(rates: tuple[tuple[int, float], ...]) -> None:
    for queries in (1, 2, 3, 4, 10, 57, 200):
        assert seconds_at_limit(queries, rates) == one_record_at_a_time(queries, rates)


def test_seconds_at_limit_refuses_empty_or_zero_limits() -> None:
    for bad in ([], [(0, 1.0)], [(5, 0.0)]):
        with pytest.raises(ValueError, match="at least one record"):
            seconds_at_limit(10, bad)
    # Growing with the number of queries, never shrinking.
    times = [seconds_at_limit(q, GUARD_LIKE) for q in range(1, 400, 7)]
    assert np.all(np.diff(times) >= 0)
