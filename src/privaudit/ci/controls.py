"""Read an inference guard's YAML configuration (``--guard-config``) into :class:`ControlsEvidence`.

Only the sections the rules need are read: ``identity``, ``limits``, ``hardening`` and ``detectors``.
Other top-level sections (upstream, logging, alerts, ...) belong to the guard and are ignored here.

* per-principal limits: an identity is configured (non-empty ``identity.api_keys`` or ``identity.jwt``)
  AND ``limits.default`` is set. Limits without an identity can only count per client address.
* probing detection: at least one entry under ``detectors`` that is not switched off
  (``null``/``{}`` mean "enabled with defaults"; ``false`` or ``{enabled: false}`` mean off).
* hardening: ``hardening.default`` -- ``output`` (top_k | label | probabilities; probabilities when
  omitted, as in the guard), ``k``, ``round``. Without ``hardening.default`` the serving policy is not
  known from the config, and the confidence-exposure check falls back to an audited endpoint.

The guard itself (privaudit.guard.config) validates its file strictly; this reader is deliberately
lenient so it works without the guard's extra dependencies and on older files, and accepts every
file the guard accepts. Both read rate strings with :func:`parse_rates`, so a rate one accepts the
other accepts too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privaudit.errors import ConfigError
from privaudit.rules import ControlsEvidence

# The rate grammar of guard.yaml, a strict subset of the ``limits`` library's (which the guard runs
# on): "20/second", "20 per second", "100/2 minutes", joined by ; , or |. The library would also take a
# count of 0 (nothing ever admitted) and "20persecond"; a configuration saying either is a mistake.
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|\s+per\s+)\s*(?:(\d+)\s*)?(second|minute|hour|day|month|year)s?\s*$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[;,|]")
# As the limits library counts them: a month is 30 days, a year 12 such months.
WINDOW_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 30 * 86400, "year": 360 * 86400}
RATE_EXAMPLE = "'20/second;120/minute'"


@dataclass(frozen=True)
class Rate:
    """One window of a rate string: at most ``amount`` queries in any ``window_seconds``."""

    amount: int
    window_seconds: int


def parse_rates(text: str) -> tuple[Rate, ...]:
    """Every window of a rate string such as ``"20/second;120/minute"``; a ValueError saying what is
    wrong otherwise. The one reader of rate strings: the guard's configuration and the audit's
    ``--guard-config`` both call it, so they never disagree about what is a valid limit."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a rate string like {RATE_EXAMPLE}")
    rates = []
    for part in _SEPARATORS.split(text):
        m = _RATE.match(part)
        why = None
        if not part.strip():
            why = "an empty rate: check the separators"
        elif m is None:
            why = None if part.strip() == text.strip() else f"{part.strip()!r} is not a rate"
        elif int(m.group(1)) == 0 or (m.group(2) is not None and int(m.group(2)) == 0):
            why = "a count of 0 would admit nothing"
        if m is None or why is not None:
            raise ValueError(f"{text!r} is not a rate string like {RATE_EXAMPLE}" + (f" ({why})" if why else ""))
        rates.append(Rate(int(m.group(1)), int(m.group(2) or 1) * WINDOW_SECONDS[m.group(3).lower()]))
    return tuple(rates)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Identity(_Open):
    api_keys: Any = None
    jwt: Any = None


class _Limits(_Open):
    default: Optional[str] = None
    tiers: Optional[dict[str, Any]] = None
    storage: Any = None


class _OutputPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: Literal["top_k", "label", "probabilities"] = "probabilities"  # the guard's own default
    k: Optional[int] = Field(default=None, ge=1)
    round: Optional[int] = Field(default=None, ge=0)


class _Hardening(_Open):
    default: Optional[_OutputPolicy] = None


class _GuardConfig(_Open):
    identity: Optional[_Identity] = None
    limits: Optional[_Limits] = None
    hardening: Optional[_Hardening] = None
    detectors: Union[dict[str, Any], list[str], None] = None


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith(("function-", "union[", "list[", "dict[")))


def _enabled(value: Any) -> bool:
    if value is False:
        return False
    if isinstance(value, dict):
        return value.get("enabled", True) is not False
    return True


def _configured(value: Any) -> bool:
    return value not in (None, False, {}, [], "")


def parse_guard_config(data: Any, source: str) -> ControlsEvidence:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a guard configuration must be a mapping of sections (identity, limits, ...)")
    try:
        cfg = _GuardConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{source}: key '{_loc(tuple(err['loc']))}': {err['msg']}") from None
    ident = cfg.identity
    principals = [name for name in ("api_keys", "jwt") if ident is not None and _configured(getattr(ident, name))]
    default = cfg.limits.default.strip() if cfg.limits is not None and cfg.limits.default is not None else None
    rate_strings = {"limits.default": default} if default is not None else {}
    if cfg.limits is not None:
        rate_strings.update({f"limits.tiers.{name}": rates for name, rates in (cfg.limits.tiers or {}).items()})
    for key, rates in rate_strings.items():
        try:
            parse_rates(rates)
        except ValueError as exc:
            raise ConfigError(f"{source}: key '{key}': {exc}") from None
    if default and principals:
        limits_text = f"limits.default {default} per principal ({' or '.join(principals)})"
    elif default:
        limits_text = f"limits.default {default}, but no identity (api_keys or jwt) is configured, so nothing ties queries to a principal"
    elif principals:
        limits_text = f"identity configured ({' or '.join(principals)}) but no limits.default"
    else:
        limits_text = "no identity and no limits configured"
    if cfg.limits is not None and cfg.limits.tiers:
        limits_text += f"; tiers: {', '.join(sorted(cfg.limits.tiers))}"
    dets = cfg.detectors
    # calibration_data / calibration_label configure the detectors; they are not detectors themselves.
    names = tuple(dets) if isinstance(dets, list) else tuple(
        k for k, v in (dets or {}).items() if _enabled(v) and not k.startswith("calibration_"))
    out = cfg.hardening.default if cfg.hardening is not None else None
    return ControlsEvidence(
        source=source, per_principal_limits=bool(default) and bool(principals), limit_description=limits_text,
        probing_detection=bool(names), detectors=names,
        hardening_output=None if out is None else out.output,
        hardening_round=None if out is None else out.round,
        hardening_k=None if out is None else out.k)


def read_guard_yaml(path: Path, label: str, missing: str = "no such file") -> Any:
    """The decoded YAML of a guard configuration; a one-line ConfigError when it cannot be read
    (``label`` names the file in the message, ``missing`` says what to do when it does not exist).
    Shared by this reader and the guard's own loader."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: {missing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def load_controls(path: str | Path) -> ControlsEvidence:
    """Parse the guard configuration at ``path``; any problem is a one-line ConfigError naming it."""
    p = Path(path)
    return parse_guard_config(read_guard_yaml(p, f"--guard-config {p}"), str(p))
