"""One validated description of an audit: what to audit, how hard, what to claim and where it runs.

The CLI and the Python API both build an :class:`AuditConfig`; the stages read only from it. Each group
below maps to a group of command-line options (docs/api.md lists them). Validation happens here, once,
before any data is read or any query is sent; a bad value is a one-line
:class:`~privaudit.errors.ConfigError` naming the command-line option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from privaudit.attacks.membership import registry
from privaudit.audit.backends import registry as backend_registry
from privaudit.errors import ConfigError
from privaudit.models import ModelOptions
from privaudit.rules import ControlsEvidence, Policy

# Strongest first at few reference models (see bench/results/membership.md); all are cheap once the
# reference models exist. label_only is added automatically when the target exposes labels only,
# because it sends extra queries.
DEFAULT_ATTACKS: tuple[str, ...] = ("ensemble_online", "rmia_online", "lira_online", "rmia_offline", "lira_offline",
                                    "shadow", "loss")


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class DataConfig(_Group):
    """The audit game: ``train`` are members, ``holdout`` non-members (paths, ``(X, y)`` or DataFrames)."""

    train: Any
    holdout: Any
    label: str | None = None


class ModelConfig(_Group):
    """The target: a path, an http(s) URL, ``module:attr``, or an in-memory classifier or callable."""

    source: Any
    allow_pickle: bool = False
    trust: tuple[str, ...] = ()
    http: dict[str, Any] = Field(default_factory=dict)
    options: ModelOptions = Field(default_factory=ModelOptions)

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> ModelOptions:
        try:
            options = ModelOptions.of(value)
        except TypeError as exc:  # an option ModelOptions does not have
            raise ConfigError(f"--model-options: {exc}") from None
        for key, number, least in (("ref_epochs", int, 1), ("ref_batch_size", int, 1), ("ref_lr", float, 0.0)):
            got = getattr(options, key)
            if isinstance(got, bool) or not isinstance(got, (int, float) if number is float else int):
                raise ConfigError(f"--{key.replace('_', '-')} {got!r}: must be a number")
            if (got < least) if least else not got > 0:
                raise ConfigError(f"--{key.replace('_', '-')} {got}: must be " + ("1 or more" if least else "above 0"))
        return options

    @field_validator("http", mode="before")
    @classmethod
    def _http(cls, value: Any) -> dict[str, Any]:
        out = {k: v for k, v in dict(value or {}).items() if v is not None}
        if isinstance(out.get("classes"), str):
            out["classes"] = [c.strip() for c in out["classes"].split(",")]
        return out


class AttackConfig(_Group):
    """Which membership attacks run, with how many reference models trained how."""

    names: tuple[str, ...] | None = None  # None: DEFAULT_ATTACKS, or the label-only pair on a label-only target
    reference_models: int = 4
    trainer: str | None = None  # module:function training a reference model; default: clone the target
    member_prior: float | None = None  # for the precision of flagged records; default: the audit's own share
    n_bootstrap: int = 200
    what_if: bool = True

    @field_validator("names", mode="before")
    @classmethod
    def _names(cls, value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        names = tuple(dict.fromkeys(n.strip() for n in (value.split(",") if isinstance(value, str) else value)))
        known = registry()
        unknown = [n for n in names if n not in known]
        if unknown:  # rejected before any query is sent
            raise ConfigError(f"--attacks: unknown attack(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
        return names

    @field_validator("reference_models")
    @classmethod
    def _reference_models(cls, value: int) -> int:
        if value < 0:
            raise ConfigError("--reference-models must be 0 or more")
        return value

    @field_validator("member_prior")
    @classmethod
    def _prior(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < 1:
            raise ConfigError(f"--member-prior {value}: must be between 0 and 1")
        return value


class PrivacyClaim(_Group):
    """A differential-privacy claim to test (``epsilon`` None: no claim) and the delta of every epsilon bound."""

    epsilon: float | None = None
    delta: float = 1e-5

    @field_validator("epsilon")
    @classmethod
    def _epsilon(cls, value: float | None) -> float | None:
        if value is not None and not value >= 0:
            raise ConfigError(f"--claimed-epsilon {value}: must be 0 or more")
        return value

    @field_validator("delta")
    @classmethod
    def _delta(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ConfigError(f"--delta {value}: must be between 0 and 1")
        return value


class InversionConfig(_Group):
    """Model inversion (MI-Face) and attribute inference, both judged by ATLAS-EXF-001."""

    enabled: bool = False
    image_shape: tuple[int, ...] | None = None  # HxW or HxWxC; "8x8" is read too
    budget: int = 3000  # queries MI-Face may spend per class
    classes: tuple[Any, ...] | None = None  # classes to invert; default: every class
    sensitive: str | None = None  # feature column attribute inference guesses

    @field_validator("image_shape", mode="before")
    @classmethod
    def _shape(cls, value: Any) -> tuple[int, ...] | None:
        if value is None:
            return None
        try:
            shape = tuple(int(p) for p in (value.lower().split("x") if isinstance(value, str) else value))
        except (TypeError, ValueError):
            shape = ()
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ConfigError(f"--image-shape {value}: expected HxW or HxWxC with positive integers, e.g. 8x8")
        return shape

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: int) -> int:
        if value < 1:
            raise ConfigError(f"--inversion-budget {value}: must be 1 or more")
        return value


class ReportConfig(_Group):
    """What the report is called, records, and judges against (policy, deployment controls)."""

    model_name: str | None = None  # default: the model file's stem, else "model"
    include_records: bool = False  # let writers embed raw rows of the most exposed records
    command_line: tuple[str, ...] | None = None  # for provenance; default: sys.argv
    policy: Policy = Field(default_factory=Policy)
    controls: ControlsEvidence | None = None

    @field_validator("policy", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> Policy:
        return Policy() if value is None else value


class CacheConfig(_Group):
    """The score and analysis cache (default folder: ~/.cache/privaudit)."""

    enabled: bool = True
    directory: Path | None = None


class BackendConfig(_Group):
    """Where reference models train: local processes, or Ray (docs/scale.md)."""

    kind: str = "local"
    jobs: int | None = None
    address: str | None = None
    cpus: float | None = None
    gpus: float | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        known = backend_registry()
        if value not in known:
            raise ConfigError(f"--backend {value}: unknown backend; choose from {', '.join(sorted(known))}")
        return value

    @field_validator("jobs")
    @classmethod
    def _jobs(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ConfigError(f"--jobs {value}: must be 1 or more")
        return value


# audit()'s keyword options, each the field of one group; the CLI's options map onto the same names.
OPTIONS: dict[str, tuple[str, str]] = {
    "label": ("data", "label"),
    "allow_pickle": ("model", "allow_pickle"), "trust": ("model", "trust"), "http": ("model", "http"),
    "model_options": ("model", "options"),
    "attacks": ("attacks", "names"), "reference_models": ("attacks", "reference_models"),
    "trainer": ("attacks", "trainer"), "member_prior": ("attacks", "member_prior"),
    "n_bootstrap": ("attacks", "n_bootstrap"), "what_if": ("attacks", "what_if"),
    "claimed_epsilon": ("privacy", "epsilon"), "delta": ("privacy", "delta"),
    "inversion": ("inversion", "enabled"), "image_shape": ("inversion", "image_shape"),
    "inversion_budget": ("inversion", "budget"), "inversion_classes": ("inversion", "classes"),
    "sensitive": ("inversion", "sensitive"),
    "model_name": ("reports", "model_name"), "include_records": ("reports", "include_records"),
    "command_line": ("reports", "command_line"), "policy": ("reports", "policy"), "controls": ("reports", "controls"),
    "jobs": ("backend", "jobs"), "backend": ("backend", "kind"), "ray_address": ("backend", "address"),
    "ref_cpus": ("backend", "cpus"), "ref_gpus": ("backend", "gpus"),
}


class AuditConfig(_Group):
    """Everything an audit needs to know, grouped; ``seed`` drives every random choice."""

    data: DataConfig
    model: ModelConfig
    attacks: AttackConfig = Field(default_factory=AttackConfig)
    privacy: PrivacyClaim = Field(default_factory=PrivacyClaim)
    inversion: InversionConfig = Field(default_factory=InversionConfig)
    reports: ReportConfig = Field(default_factory=ReportConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    seed: int = 0

    @classmethod
    def from_options(cls, model: Any, train: Any, holdout: Any, *, seed: int = 0,
                     cache_dir: str | Path | Literal[False] | None = None, **options: Any) -> AuditConfig:
        """Build the config from audit()'s flat keyword options (see :data:`OPTIONS`)."""
        groups: dict[str, dict[str, Any]] = {"data": {"train": train, "holdout": holdout}, "model": {"source": model}}
        for key, value in options.items():
            if key not in OPTIONS:
                raise TypeError(f"audit() got an unexpected keyword argument {key!r}")
            group, field = OPTIONS[key]
            groups.setdefault(group, {})[field] = value
        groups["cache"] = {"enabled": cache_dir is not False,
                           "directory": None if cache_dir is False or cache_dir is None else Path(cache_dir)}
        return cls.build(seed=seed, **groups)

    @classmethod
    def build(cls, **groups: Any) -> AuditConfig:
        """Validate; a type error anywhere becomes one ConfigError line naming the option."""
        try:
            return cls.model_validate(groups)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"{_flag(err['loc'])}: {err['msg']} (got {str(err.get('input'))[:80]!r})") from None


# Fields whose command-line option is not their keyword's name.
_CLI_NAMES = {"attacks.n_bootstrap": "--bootstrap", "reports.controls": "--guard-config", "reports.policy": "--policy",
              "data.train": "--train", "data.holdout": "--holdout", "model.source": "--model",
              "model.options.format": "--model-format", "seed": "--seed"}


def _flag(loc: tuple[Any, ...]) -> str:
    """The command-line option a validation error's location stands for."""
    where = ".".join(str(p) for p in loc)
    nested = ".".join(str(p) for p in loc[:3])
    if nested in _CLI_NAMES or where in _CLI_NAMES:
        return _CLI_NAMES.get(nested) or _CLI_NAMES[where]
    if tuple(loc[:2]) in (("model", "options"), ("model", "http")) and len(loc) > 2:
        return "--" + str(loc[2]).replace("_", "-")  # --ref-epochs, --batch-size, ...
    return next(("--" + k.replace("_", "-") for k, v in OPTIONS.items() if ".".join(v) == where), where)
