"""The audit's reading of guard.yaml (privaudit.ci.controls) and the guard's own (privaudit.guard.config)
agree on rate strings: one function reads them for both, and the guard's runtime library accepts
everything that function accepts, with the same windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from privaudit.ci.controls import WINDOW_SECONDS, Rate, parse_guard_config, parse_rates
from privaudit.errors import ConfigError

GOOD = [
    ("20/second", [(20, 1)]),
    ("20 per second", [(20, 1)]),
    ("20/seconds", [(20, 1)]),
    ("20/Second", [(20, 1)]),
    (" 20 / 2 minutes ", [(20, 120)]),
    ("20/second;120/minute;20000/day", [(20, 1), (120, 60), (20000, 86400)]),
    ("10 per second, 100/2 minutes|1000/day", [(10, 1), (100, 120), (1000, 86400)]),
    ("5/hour;1/month;3/year", [(5, 3600), (1, 30 * 86400), (3, 360 * 86400)]),
]
BAD = [
    "", "lots", "20", "20/sekond", "20/sec", "second", "/second", "-1/second", "2.5/second", "20/second;",
    ";20/second", "20/second;;5/minute", "20/second;lots", "0/second", "20/0 seconds", "20 per", "20/second/minute",
    "20/second:;5/minute",  # the limits library lets this through by a quirk of its pattern
    "20persecond",  # and this one
]


def _guard(tmp_path: Path, default: str, tier: str | None = None) -> None:
    from privaudit.guard.config import parse_config

    limits: dict[str, Any] = {"default": default, **({"tiers": {"gold": tier}} if tier is not None else {})}
    parse_config({"upstream": "http://127.0.0.1:1", "identity": {"api_keys": {"file": "k.yaml"}}, "limits": limits},
                 "guard.yaml", tmp_path)


def _audit(default: str, tier: str | None = None) -> None:
    limits: dict[str, Any] = {"default": default, **({"tiers": {"gold": tier}} if tier is not None else {})}
    parse_guard_config({"identity": {"api_keys": {"file": "k.yaml"}}, "limits": limits}, "guard.yaml")


@pytest.mark.parametrize(("text", "windows"), GOOD)
def test_good_rates_are_accepted_by_both_readers_and_the_limiter(tmp_path: Path, text: str,
                                                                 windows: list[tuple[int, int]]) -> None:
    import limits

    assert parse_rates(text) == tuple(Rate(n, w) for n, w in windows)
    _guard(tmp_path, text)
    _guard(tmp_path, "1/second", tier=text)
    _audit(text)
    _audit("1/second", tier=text)
    # What the guard's limiter makes of it: the same counts over the same windows.
    items = limits.parse_many(text)
    assert [(i.amount, i.get_expiry()) for i in items] == windows


@pytest.mark.parametrize("text", BAD)
def test_bad_rates_are_refused_by_both_readers_with_one_message(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError) as parsed:
        parse_rates(text)
    with pytest.raises(ConfigError) as guard:
        _guard(tmp_path, text)
    with pytest.raises(ConfigError) as audit:
        _audit(text)
    with pytest.raises(ConfigError) as audit_tier:
        _audit("1/second", tier=text)
    reason = str(parsed.value)
    assert "is not a rate string like '20/second;120/minute'" in reason
    assert str(guard.value).endswith(f"limits.default: {reason}")
    assert str(audit.value).endswith(f"key 'limits.default': {reason}")
    assert "limits.tiers.gold" in str(audit_tier.value)
    for msg in (str(guard.value), str(audit.value)):
        assert "\n" not in msg


def test_non_strings_are_refused_by_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        _guard(tmp_path, 20)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        _audit(20)  # type: ignore[arg-type]


def test_window_lengths_match_the_limiter() -> None:
    from limits import parse

    for unit, seconds in WINDOW_SECONDS.items():
        assert parse(f"1/{unit}").get_expiry() == seconds
