"""The engine's shape: one validated AuditConfig built the same way by the CLI and the API, stages small and
typed, no private names imported across packages, no import hidden in a function to dodge a cycle."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest

import privaudit
from privaudit import cli
from privaudit.audit import AuditConfig, stages
from privaudit.audit.stages import assemble, attacks, load, membership, query, references, sections
from privaudit.errors import ConfigError

SRC = Path(privaudit.__file__).parent
STAGE_MODULES = (load, query, references, attacks, membership, sections, assemble)

# Imports inside functions that are allowed, and why. Anything else at function level is a cycle being
# dodged (or a new optional dependency that belongs here with its reason).
LAZY_OK = {
    "privaudit/cli.py": "commands load what they use, so `privaudit --help` starts fast on the core install",
    "privaudit/guard/cli.py": "the guard's subcommands load the server only when it is started",
    "privaudit/models/__init__.py": "the adapter registry imports each format's module on demand (torch, onnx, ...)",
}
OPTIONAL = ("privaudit.models.torch", "privaudit.models.torch_reference", "privaudit.models.torch_view",
            "privaudit.models.onnx", "privaudit.models.xgboost", "privaudit.models.lightgbm",
            "privaudit.scan.aws", "privaudit.audit.backends.ray", "privaudit.guard.monitoring")


def _modules() -> list[tuple[str, ast.Module]]:
    return [(p.relative_to(SRC.parent).as_posix(), ast.parse(p.read_text(encoding="utf-8")))
            for p in sorted(SRC.rglob("*.py"))]


def test_public_api_is_pinned() -> None:
    assert sorted(privaudit.__all__) == ["Report", "__version__", "audit", "load_data", "load_model"]
    params = inspect.signature(privaudit.audit).parameters
    assert list(params)[:3] == ["model", "train", "holdout"] and "config" in params and "reporter" in params


def test_options_and_groups_build_the_same_config(tmp_path: Path) -> None:
    flat = AuditConfig.from_options("m.skops", "tr.csv", "ho.csv", label="y", reference_models=8,
                                    attacks="lira_online, rmia_online", claimed_epsilon=1.0, delta=1e-6,
                                    inversion=True, image_shape="8x8", jobs=2, backend="ray", cache_dir=False,
                                    model_options={"device": "cpu", "ref_epochs": 5}, seed=3)
    grouped = AuditConfig.build(
        data={"train": "tr.csv", "holdout": "ho.csv", "label": "y"},
        model={"source": "m.skops", "options": {"device": "cpu", "ref_epochs": 5}},
        attacks={"names": ["lira_online", "rmia_online"], "reference_models": 8},
        privacy={"epsilon": 1.0, "delta": 1e-6}, inversion={"enabled": True, "image_shape": (8, 8)},
        cache={"enabled": False}, backend={"kind": "ray", "jobs": 2}, seed=3)
    assert flat == grouped
    assert flat.attacks.names == ("lira_online", "rmia_online") and flat.inversion.image_shape == (8, 8)


@pytest.mark.parametrize("options, message", [
    ({"reference_models": -1}, "--reference-models must be 0 or more"),
    ({"reference_models": "many"}, "--reference-models"),
    ({"delta": 2.0}, "--delta 2.0: must be between 0 and 1"),
    ({"attacks": ["lira", "loss"]}, "--attacks: unknown attack(s) lira"),
    ({"image_shape": "8by8"}, "--image-shape 8by8: expected HxW"),
    ({"model_options": {"ref_lr": 0}}, "--ref-lr 0: must be above 0"),
    ({"member_prior": 1.5}, "--member-prior 1.5: must be between 0 and 1"),
    ({"inversion_budget": 0}, "--inversion-budget 0: must be 1 or more"),
])
def test_bad_options_are_one_line_errors_naming_the_flag(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        AuditConfig.from_options("m.skops", "tr.csv", "ho.csv", **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_keyword_is_a_type_error_and_config_excludes_loose_options() -> None:
    with pytest.raises(TypeError, match="reference_model"):
        privaudit.audit("m.skops", "tr.csv", "ho.csv", reference_model=4)
    cfg = AuditConfig.from_options("m.skops", "tr.csv", "ho.csv")
    with pytest.raises(TypeError, match="not both"):
        privaudit.audit("m.skops", config=cfg)


def test_cli_builds_the_config_the_api_would(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[AuditConfig] = []

    class Stop(Exception):
        pass

    def fake_audit(*args: Any, config: AuditConfig, **kwargs: Any) -> Any:
        seen.append(config)
        raise Stop

    monkeypatch.setattr(privaudit, "audit", fake_audit)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Stop):
        cli.main(["audit", "-m", "model.skops", "--train", "tr.csv", "--holdout", "ho.csv", "--label", "y",
                  "-k", "8", "--attacks", "lira_online,rmia_online", "--claimed-epsilon", "1", "--seed", "3",
                  "--no-cache", "--ref-epochs", "5", "--image-shape", "8x8", "--inversion", "--debug"])
    api = AuditConfig.from_options("model.skops", Path("tr.csv"), Path("ho.csv"), label="y", reference_models=8,
                                   attacks=["lira_online", "rmia_online"], claimed_epsilon=1.0, seed=3,
                                   cache_dir=False, model_options={"ref_epochs": 5}, image_shape=(8, 8),
                                   inversion=True, model_name=None, command_line=seen[0].reports.command_line)
    assert seen[0] == api


def test_stages_are_typed_and_short() -> None:
    listed = stages.__doc__ or ""
    for module in STAGE_MODULES:
        assert f"{module.__name__.rsplit('.', 1)[1]}.py" in listed  # the package docstring lists the flow
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                assert length <= 60, f"{module.__name__}.{node.name} is {length} lines"
    for cls in (load.Inputs, query.Answers, references.Plan, references.References, attacks.AttackRun,
                sections.Sections):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    body = inspect.getsource(privaudit.audit)
    order = ["load_inputs", "query_target", "plan_attacks", "train_references", "run_attacks",
             "judge_membership", "extra_sections", "assemble_report", "with_findings"]
    positions = [body.index(f"{name}(") for name in order]
    assert positions == sorted(positions)
    assert len(body.splitlines()) <= 60


def test_no_private_names_cross_packages() -> None:
    offences = []
    for path, tree in _modules():
        package = path.split("/")[1] if path.count("/") > 1 else path
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("privaudit"):
                parts = (node.module or "").split(".")
                other = parts[1] if len(parts) > 1 else ""
                target = f"{other}.py" if other and not (SRC / other).is_dir() else other
                if target != package and any(a.name.startswith("_") and not a.name.startswith("__")
                                             for a in node.names):
                    offences.append(f"{path}: from {node.module} import {[a.name for a in node.names]}")
    assert not offences, offences


def test_no_function_level_imports_dodging_cycles() -> None:
    offences = []
    for path, tree in _modules():
        if path in LAZY_OK:
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("privaudit"):
                    names = [node.module] if node.module in OPTIONAL else [
                        f"{node.module}.{a.name}" for a in node.names]
                    if not all(n.startswith(OPTIONAL) for n in names):
                        offences.append(f"{path}:{node.lineno} {fn.name}: from {node.module} import "
                                        f"{', '.join(a.name for a in node.names)}")
    assert not offences, offences


def test_every_command_takes_the_shared_path() -> None:
    """audit, scan and monitor hand their report to privaudit.ci.conclude; nothing else writes or gates."""
    for path in ("privaudit/cli.py", "privaudit/guard/monitor_cmd.py"):
        text = (SRC.parent / path).read_text(encoding="utf-8")
        assert "from privaudit.ci.conclude import" in text, path
        assert "gate.evaluate" not in text and "write_report" not in text and "atomic_write" not in text, path
    from privaudit.report import writers

    assert {"json", "markdown", "sarif"} <= {name for name, _ in writers("monitor").values()}


@pytest.mark.parametrize(("options", "flag"), [
    ({"n_bootstrap": "many"}, "--bootstrap"), ({"seed": "x"}, "--seed"),
    ({"model_options": {"ref_epochs": "x"}}, "--ref-epochs"), ({"model_options": {"bogus": 1}}, "--model-options"),
])
def test_errors_name_the_command_line_option(options: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError) as err:
        AuditConfig.from_options("m.skops", "tr.csv", "ho.csv", **options)
    assert str(err.value).startswith(flag) and "\n" not in str(err.value)
