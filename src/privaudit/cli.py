"""Command line. Each command parses its options, calls the public API, and renders the result."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from privaudit.errors import ConfigError, PrivauditError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit ML models for membership inference and model inversion (MITRE ATLAS AML.T0024).")
DEMO_HTML = "privaudit-demo.html"
_ARGV: list[str] | None = None  # the arguments main() was given, for the report's provenance


def _check_outputs(outputs: list[Path]) -> None:
    """Every output must be writable, in a known format, before any work starts."""
    from privaudit.report import check_output

    for out in outputs:
        check_output(out)


def _write_outputs(report: Any, outputs: list[Path], console: Console) -> None:
    from privaudit.ci.conclude import write_all
    from privaudit.report import WriteOptions

    write_all(report, outputs, WriteOptions(), announce=lambda out: console.print(f"wrote {escape(str(out))}",
                                                                                 highlight=False))


@app.command()
def demo(
    output: Annotated[list[Path], typer.Option("-o", "--output", help=f"Report file; repeatable; format from the extension (default: {DEMO_HTML}).")] = [],
    jobs: Annotated[Optional[int], typer.Option(help="Parallel jobs for reference models (default: all cores).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Audit an overfit model on bundled hospital data, then a regularised one on the same data."""
    from privaudit.demo import run_demo
    from privaudit.report.console import RichReporter, render_summary
    from privaudit.report.findings_console import render_findings

    outputs = list(output)
    skipped = None
    if outputs:
        _check_outputs(outputs)
    else:
        try:
            _check_outputs([Path(DEMO_HTML)])
            outputs = [Path(DEMO_HTML)]
        except ConfigError as exc:  # the demo still runs; it says why there is no HTML page
            skipped = str(exc)
    console = Console()
    if skipped:
        console.print(f"[dim]no HTML report: {escape(skipped)}[/dim]", highlight=False)

    def show(report: Any) -> None:
        render_summary(report, console)
        render_findings(report, console)

    run_demo(console, RichReporter, jobs=jobs, show=show, write=lambda r: _write_outputs(r, outputs, console))


@app.command()
def audit(
    model: Annotated[str, typer.Option("--model", "-m", help="Model: .skops, .pt/.pth (TorchScript), .pt2 (torch.export), .onnx, .ubj (XGBoost), .txt (LightGBM), .joblib/.pkl (with --allow-pickle), http(s):// endpoint, or module:attr.")],
    train: Annotated[Path, typer.Option(help="Records the model was trained on (CSV, Parquet or NPZ).")],
    holdout: Annotated[Path, typer.Option(help="Records the model never saw, from the same distribution.")],
    label: Annotated[Optional[str], typer.Option(help="Label column (CSV/Parquet).")] = None,
    output: Annotated[list[Path], typer.Option("-o", "--output", help="Report file; repeatable. Format from the extension (.json, .sarif, .html, .md, .xml ...).")] = [],
    fail_on: Annotated[Optional[str], typer.Option("--fail-on", help="Exit 1 on a failing finding at or above: critical, high, medium, low or never (default: high, or the policy file's).")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="An earlier JSON report of the same model: exit 1 on any regression.")] = None,
    policy: Annotated[Optional[Path], typer.Option(help="Policy file (default: ./privaudit.toml, else \\[tool.privaudit] in ./pyproject.toml).")] = None,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="Name in finding ids (default: the model file's stem).")] = None,
    data_sensitivity: Annotated[Optional[str], typer.Option("--data-sensitivity", help="public, internal, pii, health or financial (default: internal).")] = None,
    guard_config: Annotated[Optional[Path], typer.Option("--guard-config", help="The inference guard's YAML configuration (deployment controls).")] = None,
    sarif_location: Annotated[Optional[str], typer.Option("--sarif-location", help="File SARIF results point at (default: the policy file, else README.md).")] = None,
    include_records: Annotated[bool, typer.Option("--include-records", help="Let writers embed raw records of the most exposed rows.")] = False,
    reference_models: Annotated[int, typer.Option("--reference-models", "-k", help="Reference models to train.")] = 4,
    attacks: Annotated[Optional[str], typer.Option(help="Comma-separated attacks (default: ensemble_online,rmia_online,lira_online,rmia_offline,lira_offline,shadow,loss).")] = None,
    trainer: Annotated[Optional[str], typer.Option(help="module:function with fn(X, y, seed) -> fitted model (scikit-learn-like, torch nn.Module or native booster), for reference models.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    jobs: Annotated[Optional[int], typer.Option(help="Parallel jobs (default: all cores).")] = None,
    backend: Annotated[str, typer.Option(help="Where reference models train: local (processes) or ray (see docs/scale.md).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster to use, e.g. ray://head:10001 (default: start a local Ray instance).")] = None,
    ref_cpus: Annotated[Optional[float], typer.Option("--ref-cpus", help="Ray: CPUs each reference model reserves (default 1).")] = None,
    ref_gpus: Annotated[Optional[float], typer.Option("--ref-gpus", help="Ray: GPUs each reference model reserves (default 0).")] = None,
    claimed_epsilon: Annotated[Optional[float], typer.Option("--claimed-epsilon", help="The epsilon the model claims (DP).")] = None,
    delta: Annotated[float, typer.Option(help="The delta of the DP claim and of the epsilon lower bound.")] = 1e-5,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Allow loading pickle/joblib files (runs their code).")] = False,
    trust: Annotated[list[str], typer.Option(help="A skops type to trust; repeatable.")] = [],
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where reference-model scores are cached.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the score cache.")] = False,
    member_prior: Annotated[Optional[float], typer.Option(help="Prior probability of membership for PPV.")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="HTTP: auto, kserve-v1, v2 or custom.")] = None,
    classes: Annotated[Optional[str], typer.Option(help="HTTP: comma-separated class labels, in output order.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="HTTP: records per request.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="HTTP: requests in flight.")] = None,
    auth_env: Annotated[Optional[str], typer.Option(help="HTTP: environment variable holding the credential.")] = None,
    auth_header: Annotated[Optional[str], typer.Option(help="HTTP: header for the credential (default Authorization).")] = None,
    max_queries: Annotated[Optional[int], typer.Option(help="HTTP: never send more than this many records.")] = None,
    rate: Annotated[Optional[float], typer.Option(help="HTTP: at most this many records per second.")] = None,
    retries: Annotated[Optional[int], typer.Option(help="HTTP: retries of a failed request (default 4).")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="HTTP: seconds to wait for one answer (default 30).")] = None,
    input_field: Annotated[Optional[str], typer.Option(help="HTTP custom: dotted path for the rows in the request.")] = None,
    output_field: Annotated[Optional[str], typer.Option(help="HTTP custom: dotted path to the predictions in the answer.")] = None,
    inversion: Annotated[bool, typer.Option("--inversion", help="Also run MI-Face model inversion (ATLAS-EXF-001).")] = False,
    image_shape: Annotated[Optional[str], typer.Option("--image-shape", help="Image data: HxW (e.g. 8x8) for the inversion prior and pictures.")] = None,
    sensitive: Annotated[Optional[str], typer.Option("--sensitive", help="Feature column to infer with attribute inference (ATLAS-EXF-001).")] = None,
    inversion_budget: Annotated[int, typer.Option("--inversion-budget", help="Queries MI-Face may spend per class.")] = 3000,
    bootstrap: Annotated[int, typer.Option("--bootstrap", hidden=True, help="Bootstrap resamples for TPR intervals.")] = 200,
    model_format: Annotated[Optional[str], typer.Option("--model-format", help="Model format when the extension does not say: skops, pickle, torchscript, torch-export, torch-pickle, onnx, xgboost, lightgbm.")] = None,
    onnx_input: Annotated[Optional[str], typer.Option("--onnx-input", help="ONNX: the graph input to feed.")] = None,
    onnx_output: Annotated[Optional[str], typer.Option("--onnx-output", help="ONNX: the graph output holding class scores.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="Torch: device for the model and the reference-model loop (cpu, cuda, cuda:1, mps).")] = None,
    ref_epochs: Annotated[Optional[int], typer.Option("--ref-epochs", help="Torch reference models: most epochs (default 30).")] = None,
    ref_lr: Annotated[Optional[float], typer.Option("--ref-lr", help="Torch reference models: Adam learning rate (default 0.001).")] = None,
    ref_batch_size: Annotated[Optional[int], typer.Option("--ref-batch-size", help="Torch reference models: batch size (default 128).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Measure how well an attacker can tell the model's training records from records it never saw.

    Exit codes: 0 passed, 1 a failing finding at or above --fail-on or a regression, 2 a usage or
    input error, 3 nothing auditable.
    """
    import privaudit
    from privaudit.audit import AuditConfig
    from privaudit.ci.conclude import gate_result, judge, prepare_ci, write_all
    from privaudit.ci.controls import load_controls
    from privaudit.report.console import RichReporter, render_summary
    from privaudit.report.findings_console import render_findings

    # Every input is checked before the audit starts, so a usage error (2) never waits for, or hides
    # behind, the audit's own outcome (3, or the gate's 1).
    ci = prepare_ci("audit", policy=policy, outputs=output, baseline=baseline, fail_on=fail_on,
                    sarif_location=sarif_location, include_records=include_records,
                    data_sensitivity=data_sensitivity, model_name=model_name)
    config = AuditConfig.build(
        data={"train": train, "holdout": holdout, "label": label},
        model={"source": model, "allow_pickle": allow_pickle, "trust": tuple(trust),
               "http": {"protocol": protocol, "classes": classes, "batch_size": batch_size, "concurrency": concurrency,
                        "auth_env": auth_env, "auth_header": auth_header, "max_queries": max_queries, "rate": rate,
                        "retries": retries, "timeout": timeout, "input_field": input_field,
                        "output_field": output_field},
               "options": {"format": model_format, "onnx_input": onnx_input, "onnx_output": onnx_output,
                           "device": device, "ref_epochs": ref_epochs, "ref_lr": ref_lr,
                           "ref_batch_size": ref_batch_size}},
        attacks={"names": attacks, "reference_models": reference_models, "trainer": trainer,
                 "member_prior": member_prior, "n_bootstrap": bootstrap},
        privacy={"epsilon": claimed_epsilon, "delta": delta},
        inversion={"enabled": inversion, "image_shape": image_shape, "budget": inversion_budget, "sensitive": sensitive},
        reports={"model_name": ci.settings.model_name, "include_records": include_records,
                 "command_line": ("privaudit", *(_ARGV if _ARGV is not None else sys.argv[1:])),
                 "policy": ci.settings.policy,
                 "controls": load_controls(guard_config) if guard_config is not None else None},
        cache={"enabled": not no_cache, "directory": cache_dir},
        backend={"kind": backend, "jobs": jobs, "address": ray_address, "cpus": ref_cpus, "gpus": ref_gpus},
        seed=seed)
    console = Console()
    with RichReporter() as ui:
        report, notes = judge(privaudit.audit(config=config, reporter=ui), ci)
        for note in notes:
            ui.warn(note)
    render_summary(report, console)
    write_all(report, ci.outputs, ci.write, announce=lambda out: console.print(f"wrote {escape(str(out))}", highlight=False))
    render_findings(report, console)
    result = gate_result(report, ci)
    colour = "green" if result.passed else "bold red"
    console.print(f"[{colour}]{escape(result.message)}[/{colour}]", highlight=False)
    raise typer.Exit(result.code)


@app.command()
def scan(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Terraform (.tf, plan .json), CloudFormation, Kubernetes manifests, guard.yaml; files or folders.")] = None,
    output: Annotated[list[Path], typer.Option("-o", "--output", help="Report file; repeatable. Format from the extension (.json, .sarif, .html, .md, .xml).")] = [],
    fail_on: Annotated[Optional[str], typer.Option("--fail-on", help="Exit 1 on a failing finding at or above: critical, high, medium, low or never.")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="An earlier scan JSON report: exit 1 on any new failing finding.")] = None,
    policy: Annotated[Optional[Path], typer.Option(help="Policy file (default: ./privaudit.toml, else \\[tool.privaudit] in ./pyproject.toml).")] = None,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Folder of privaudit audit JSON reports, joined to deployments by model name.")] = None,
    data_sensitivity: Annotated[Optional[str], typer.Option("--data-sensitivity", help="Default for deployments without a data-sensitivity tag.")] = None,
    aws: Annotated[bool, typer.Option("--aws", help="Also read the live AWS account (read-only calls).")] = False,
    aws_profile: Annotated[Optional[str], typer.Option("--aws-profile", help="AWS profile to use.")] = None,
    aws_region: Annotated[list[str], typer.Option("--aws-region", help="Region to scan; repeatable (default: the profile's region).")] = [],
    aws_endpoint_url: Annotated[Optional[str], typer.Option("--aws-endpoint-url", help="Send AWS calls here (moto, LocalStack).")] = None,
    sarif_location: Annotated[Optional[str], typer.Option("--sarif-location", help="File SARIF results of live resources point at (default: the policy file, else README.md).")] = None,
    jobs: Annotated[Optional[int], typer.Option(help="Processes for parsing many .tf files (default: all cores).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Find model deployments in infrastructure code (and live AWS) and check their ATLAS-EXF-003/001 controls.

    Exit codes: 0 passed, 1 a failing finding at or above --fail-on or a regression, 2 a usage or input error.
    """
    from privaudit.ci.conclude import gate_result, judge, prepare_ci, write_all
    from privaudit.report.scan_console import render_scan
    from privaudit.scan import AwsOptions, ScanConfig
    from privaudit.scan import scan as run_scan

    if not paths and not aws:
        raise ConfigError("scan: give at least one PATH (IaC files or folders) or --aws")
    if (aws_profile or aws_region or aws_endpoint_url) and not aws:
        raise ConfigError("--aws-profile, --aws-region and --aws-endpoint-url need --aws")
    ci = prepare_ci("scan", policy=policy, outputs=output, baseline=baseline, fail_on=fail_on,
                    sarif_location=sarif_location, data_sensitivity=data_sensitivity)
    console = Console()
    config = ScanConfig(paths=tuple(paths or ()), policy=ci.settings.policy, reports_dir=reports, jobs=jobs,
                        aws=AwsOptions(profile=aws_profile, regions=tuple(aws_region), endpoint_url=aws_endpoint_url,
                                       show_progress=True) if aws else None,
                        command_line=("privaudit", *(_ARGV if _ARGV is not None else sys.argv[1:])))
    report, notes = judge(run_scan(config), ci)
    for note in notes:
        console.print(f"warning: {escape(note)}", highlight=False)
    render_scan(report, console)
    write_all(report, ci.outputs, ci.write, announce=lambda out: console.print(f"wrote {escape(str(out))}", highlight=False))
    result = gate_result(report, ci)
    colour = "green" if result.passed else "bold red"
    console.print(f"[{colour}]{escape(result.message)}[/{colour}]", highlight=False)
    raise typer.Exit(result.code)


def _register_guard() -> None:
    # The guard and monitor live in the optional "guard" extra; without it their commands still exist
    # and say how to install what they need, while the audit keeps working on the light core install.
    try:
        from privaudit.guard.cli import guard_app
        from privaudit.guard.monitor_cmd import monitor_command
    except ModuleNotFoundError as exc:
        missing = exc.name

        def _needs_extra() -> None:
            raise ConfigError(f"this command needs the guard extra (missing module '{missing}'): "
                              "pip install 'privaudit[guard]'")

        app.command("guard", help="Inference guard (needs: pip install 'privaudit[guard]').")(_needs_extra)
        app.command("monitor", help="Replay query logs (needs: pip install 'privaudit[guard]').")(_needs_extra)
        return
    app.add_typer(guard_app, name="guard")
    app.command("monitor")(monitor_command)


_register_guard()


@app.command()
def invert(
    model: Annotated[str, typer.Option("--model", "-m", help="Model: .skops, .pt/.pt2, .onnx, .ubj, .txt, .joblib/.pkl (with --allow-pickle), http(s):// endpoint, or module:attr.")],
    train: Annotated[Path, typer.Option(help="Records the model was trained on.")],
    holdout: Annotated[Path, typer.Option(help="Records the model never saw.")],
    label: Annotated[Optional[str], typer.Option(help="Label column (CSV/Parquet).")] = None,
    output: Annotated[list[Path], typer.Option("-o", "--output", help="Report file; repeatable.")] = [],
    image_shape: Annotated[Optional[str], typer.Option("--image-shape", help="Image data: HxW, e.g. 8x8.")] = None,
    sensitive: Annotated[Optional[str], typer.Option("--sensitive", help="Feature column for attribute inference.")] = None,
    inversion_budget: Annotated[int, typer.Option("--inversion-budget", help="Queries MI-Face may spend per class.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    fail_on: Annotated[Optional[str], typer.Option("--fail-on", help="critical, high, medium, low or never.")] = None,
    data_sensitivity: Annotated[Optional[str], typer.Option("--data-sensitivity", help="public, internal, pii, health or financial.")] = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Allow loading pickle/joblib files.")] = False,
    trust: Annotated[list[str], typer.Option(help="A skops type to trust; repeatable.")] = [],
    include_records: Annotated[bool, typer.Option("--include-records", help="Embed reconstructions' raw values in reports.")] = False,
    model_format: Annotated[Optional[str], typer.Option("--model-format", help="Model format when the extension does not say (see audit --help).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="Torch: device for the model.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Run only the inversion attacks (MI-Face, and attribute inference with --sensitive).

    The membership section then holds just the population (loss) attack, which costs no queries beyond
    the predictions the audit needs anyway.
    """
    audit(model=model, train=train, holdout=holdout, label=label, output=output, inversion=True,
          image_shape=image_shape, sensitive=sensitive, inversion_budget=inversion_budget, seed=seed,
          fail_on=fail_on, data_sensitivity=data_sensitivity, allow_pickle=allow_pickle, trust=trust,
          include_records=include_records, attacks="loss", reference_models=0, no_cache=True, debug=debug,
          model_format=model_format, device=device)


def _printable(text: str) -> str:
    """User data (column names, labels, paths) reaches error lines: show control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print_error(message: str) -> None:
    # A Text object is never parsed for markup, so a column named "[/bold red]" prints as written.
    from rich.text import Text

    line = Text("error: ", style="bold red")
    line.append(_printable(message))
    Console(stderr=True).print(line, highlight=False, soft_wrap=True)


_TRUTHY = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def _command() -> Any:
    """The click command typer builds, with switches shown as switches in --help (no <bool> type)."""
    import typer.main

    root = typer.main.get_command(app)

    def walk(cmd: Any) -> None:
        for param in [*cmd.params, cmd.get_help_option(typer.Context(cmd))]:
            if param is not None and getattr(param, "is_flag", False):
                param.metavar = ""  # an empty metavar leaves the type column blank
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(root)
    return root


def _switch_hint(args: list[str], message: str) -> str:
    # "--allow-pickle true": the value is taken for a stray argument; say why.
    for before, value in zip(args, args[1:]):
        if before.startswith("--") and value.lower() in _TRUTHY and f"({value})" in message:
            return f"; {before} is a switch and takes no value: write {before} alone to turn it on"
    return ""


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (3: nothing auditable); the
    audit command ends with the gate's code (see privaudit.ci.gate)."""
    global _ARGV
    args = list(sys.argv[1:] if argv is None else argv)
    _ARGV = args
    debug = "--debug" in args or os.environ.get("PRIVAUDIT_DEBUG") == "1"
    try:
        code = _command().main(args=args, standalone_mode=False, prog_name="privaudit")
    except PrivauditError as exc:
        if debug:
            raise
        _print_error(str(exc))
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:
        # typer bundles its own click (it no longer installs click), so its usage errors are TyperExceptions.
        if type(exc).__name__ == "NoArgsIsHelpError" and hasattr(exc, "show"):
            exc.show()  # the help text itself, asked for by giving no arguments
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _print_error(f"{exc.format_message()}{_switch_hint(args, exc.format_message())}{where}")
        sys.exit(2)
    except Exception as exc:
        if debug:
            raise
        _print_error(f"{type(exc).__name__}: {exc} (an internal error; run with --debug and report it)")
        sys.exit(70)
    if isinstance(code, int) and code != 0:  # click returns typer.Exit's code when not standalone
        sys.exit(code)


if __name__ == "__main__":
    main()
