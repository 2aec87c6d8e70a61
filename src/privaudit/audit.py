"""The membership-inference audit: load, query, train references, attack, measure, report."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from numpy.typing import NDArray

from privaudit import metrics
from privaudit.analysis_cache import AnalysisCache, analysis_key
from privaudit.attacks.membership import AttackContext, AttackResult, AttackSpec, registry, run_attack
from privaudit.attacks.membership.signals import probability_floor
from privaudit.backends import BackendOptions, make_backend
from privaudit.data import (Dataset, check_features_for_model, check_missing, check_same_columns, dataset_sha256,
                            encode_labels, has_real_names, load_data, rows_sha256)
from privaudit.errors import DataError, ConfigError, NothingAuditable, QueryBudgetExceeded
from privaudit.models import LoadedModel, LoadOptions, ModelOptions, as_target, load_model
from privaudit.progress import Reporter, Silent
from privaudit.reference import (ReferenceScores, Recipe, ScoreCache, default_cache_dir, default_surrogate,
                                 recipe_from_estimator, recipe_from_fitter, recipe_from_trainer, train_reference_models)
from privaudit.report.schema import (FPR_KEYS, AttackReport, AttributeInferenceSection, InversionSection, DataInfo, Membership, ModelInfo, WhatIfRow,
                                     Provenance, RecordRisk, Report, SkippedAttack, SplitCheck)
from privaudit.rules import ControlsEvidence, Evidence, Policy, evaluate_all
from privaudit.scoring import attack_report, dp_claim, membership_verdict, records_at_risk
from privaudit.splitcheck import check_split
from privaudit.textcolumns import accepts_frames, encode_text, refuse_text, takes_text
from privaudit.threads import thread_map
from privaudit.target import OutputMode, apply_output_mode, detect_output_mode, to_probabilities

# Strongest first at few reference models (see bench/results/membership.md); all are cheap once the
# reference models exist. label_only is added automatically when the target exposes labels only,
# because it sends extra queries.
DEFAULT_ATTACKS: tuple[str, ...] = ("ensemble_online", "rmia_online", "lira_online", "rmia_offline", "lira_offline",
                                    "shadow", "loss")
FPRS = tuple(float(k) for k in FPR_KEYS)
RECORDS_AT_RISK = 100
_PREDICT_CHUNK = 4096


@dataclass(frozen=True)
class AuditData:
    """The audit game: train rows (members) then holdout rows (non-members), labels encoded."""

    y: NDArray[np.int64]
    is_member: NDArray[np.bool_]
    n_train: int


def _versions() -> dict[str, str]:
    import joblib
    import scipy
    import sklearn
    import skops

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "skops": skops.__version__, "joblib": joblib.__version__}


def _load(model: Any, options: LoadOptions) -> LoadedModel:
    if isinstance(model, (str, Path)):
        return load_model(str(model), options)
    return as_target(model, options.model)


def _predict_all(loaded: LoadedModel, parts: Sequence[NDArray[np.float64]], reporter: Reporter) -> NDArray[Any]:
    """The target's outputs on the rows of every part in turn (train, then holdout), without stacking them."""
    chunks, done, total = [], 0, sum(len(p) for p in parts)
    for X in parts:
        for start in range(0, len(X), _PREDICT_CHUNK):
            chunks.append(np.asarray(loaded.target.predict(X[start:start + _PREDICT_CHUNK])))
            done += len(chunks[-1])
            reporter.progress("querying the target", done, total)
    return np.concatenate(chunks, axis=0)


def _allows_nan(estimator: Any) -> bool:
    try:
        return bool(estimator.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:
        return False


def _recipe(loaded: LoadedModel, trainer: str | None, train: Dataset, seed: int, codec: Any = None) -> Recipe:
    target_fp = loaded.sha256 or loaded.path or type(loaded.target).__name__
    if loaded.fitter is not None and loaded.sha256 is None:
        target_fp = loaded.fitter.key
    elif loaded.estimator is not None and loaded.sha256 is None:
        import joblib

        target_fp = joblib.hash(loaded.estimator)
    if trainer:
        return recipe_from_trainer(trainer, target_fingerprint=target_fp)
    if loaded.fitter is not None and getattr(loaded.fitter, "trainable", lambda: True)():
        return recipe_from_fitter(loaded.fitter.kind, loaded.fitter, target_fingerprint=target_fp)
    if loaded.estimator is not None and loaded.fitter is None:
        names = getattr(loaded.estimator, "feature_names_in_", None)
        return recipe_from_estimator(loaded.estimator, target_fingerprint=target_fp,
                                     feature_names=tuple(names) if names is not None else None, frame=codec)
    return default_surrogate(target_fingerprint=target_fp, seed=seed)


def _what_if_gap(mode: OutputMode) -> str:
    """Why there is no what-if table: it starts from full probabilities, which a hardened target hides."""
    why = {"label": "the target answers labels only",
           "top_k": f"the target answers only its top-{mode.k} classes"}.get(
        mode.kind, f"the target rounds its scores to {mode.rounding} decimals")
    return (f"what-if table left out: {why}, so the full probabilities it starts from are not available; "
            "audit the model before that hardening to see it")


def _select(names: Sequence[str] | None, mode: OutputMode) -> list[str]:
    known = registry()
    if names is None:
        chosen = list(DEFAULT_ATTACKS) if mode.has_scores else ["loss", "label_only"]
    else:
        chosen = list(dict.fromkeys(names))
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ConfigError(f"--attacks: unknown attack(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return chosen


def audit(
    model: Any,
    train: Any,
    holdout: Any,
    *,
    label: str | None = None,
    reference_models: int = 4,
    attacks: Sequence[str] | None = None,
    trainer: str | None = None,
    seed: int = 0,
    jobs: int | None = None,
    claimed_epsilon: float | None = None,
    delta: float = 1e-5,
    allow_pickle: bool = False,
    trust: Sequence[str] = (),
    http: dict[str, Any] | None = None,
    cache_dir: str | Path | Literal[False] | None = None,
    member_prior: float | None = None,
    n_bootstrap: int = 200,
    what_if: bool = True,
    inversion: bool = False,
    image_shape: tuple[int, ...] | None = None,
    inversion_budget: int = 3000,
    inversion_classes: Sequence[Any] | None = None,
    sensitive: str | None = None,
    include_records: bool = False,
    model_name: str | None = None,
    policy: Policy | None = None,
    controls: ControlsEvidence | None = None,
    reporter: Reporter | None = None,
    command_line: Sequence[str] | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    ref_cpus: float | None = None,
    ref_gpus: float | None = None,
    model_options: ModelOptions | dict[str, Any] | None = None,
) -> Report:
    """Run a membership-inference audit of ``model`` on ``train`` (members) and ``holdout`` (non-members).

    ``model`` is a path (.skops; .joblib/.pkl with ``allow_pickle``), an http(s) URL, ``module:attr``,
    or an in-memory classifier/callable. ``train``/``holdout`` are file paths, ``(X, y)`` tuples or
    DataFrames (with ``label``). ``policy`` (thresholds, data sensitivity) and ``controls`` (from a
    guard configuration) feed the rules. ``inversion=True`` adds MI-Face model inversion (``image_shape``
    for image data) and ``sensitive=COLUMN`` attribute inference; both feed ATLAS-EXF-001. The rules that turn the measurements into findings. Returns a :class:`Report`.
    ``backend`` ("local" or "ray", with ``ray_address``, ``ref_cpus``, ``ref_gpus``) decides where
    reference models train; see docs/scale.md.
    """
    ui = reporter or Silent()
    if attacks is not None:
        _select(attacks, OutputMode("probabilities"))  # reject unknown names before any query is sent
    if reference_models < 0:
        raise ConfigError("--reference-models must be 0 or more")
    if not 0 < delta < 1:
        raise ConfigError(f"--delta {delta}: must be between 0 and 1")
    trainer_backend = make_backend(backend, BackendOptions(jobs=jobs, address=ray_address, cpus=ref_cpus, gpus=ref_gpus))
    # The data first: its errors are found in seconds, while a model may take long to load.
    tr = load_data(train, label=label, name="train", allow_text=True)
    ho = load_data(holdout, label=label, name="holdout", allow_text=True)
    check_same_columns(tr, ho)
    for ds in (tr, ho):  # the verdict and the epsilon bounds judge on a part of each group kept aside
        if len(ds.X) < 2:
            raise DataError(f"{ds.source}: {len(ds.X)} record(s); an audit needs at least 2 in each of "
                            "train and holdout (and about 500 holdout records for a verdict at 1 % FPR)")
    loaded = _load(model, LoadOptions(allow_pickle=allow_pickle, trust=tuple(trust), http=dict(http or {}),
                                      model=ModelOptions.of(model_options)))
    codec = None
    if tr.text or ho.text:  # only a model that encodes text itself (a Pipeline, named columns) takes it
        raw = (tr, ho)
        if not (accepts_frames(loaded.estimator) and hasattr(loaded.target, "use_codec")):
            refuse_text(*raw)
        tr, ho, codec = encode_text(tr, ho)
        if not takes_text(loaded.estimator, codec.frame(tr.X[:1])):  # named columns, but no encoder inside
            refuse_text(*raw)
        loaded.target.use_codec(codec)  # type: ignore[attr-defined]
    est = loaded.estimator
    if est is not None:
        names = getattr(est, "feature_names_in_", None)
        check_features_for_model(tr, n_features=getattr(est, "n_features_in_", None),
                                 feature_names=list(names) if names is not None and has_real_names(tr) else None)
    for ds in (tr, ho):
        check_missing(ds, allow_nan=est is not None and _allows_nan(est))
    n_train, n_total = len(tr.X), len(tr.X) + len(ho.X)
    is_member = np.r_[np.ones(n_train, bool), np.zeros(len(ho.X), bool)]
    stacked: list[NDArray[np.float64]] = []

    def pool_rows() -> NDArray[np.float64]:
        """Both files' rows in one array, built only for what needs it (training, query-sending attacks)."""
        if not stacked:
            stacked.append(np.vstack([tr.X, ho.X]))
        return stacked[0]

    budget = (http or {}).get("max_queries")
    if budget is not None and n_total > int(budget):  # refuse before the first query, not halfway through
        raise QueryBudgetExceeded(f"--max-queries {int(budget)} is below the {n_total} records the audit must query "
                                  "once each; raise --max-queries or audit fewer records")
    if hasattr(loaded.target, "use_data_classes"):  # label-only answers name classes found in the data
        loaded.target.use_data_classes(np.concatenate([np.asarray(tr.y, dtype=object), np.asarray(ho.y, dtype=object)]))
    if loaded.format == "http":
        ui.info(f"The audit sends {n_total} queries to the endpoint now, plus any a query-based attack announces.")
    outputs = _predict_all(loaded, (tr.X, ho.X), ui)
    classes = np.asarray(loaded.target.classes)
    y = np.concatenate([encode_labels(tr, classes), encode_labels(ho, classes)])
    data = AuditData(y, is_member, n_train)
    # Only a black box (an endpoint, a callable) can round; a local estimator is read as it is.
    mode = detect_output_mode(outputs, len(classes), may_round=loaded.estimator is None)
    ui.info(f"Target output mode: {mode.kind}" + (f", rounded to {mode.rounding} decimals" if mode.rounding is not None else "")
            + (f", top-{mode.k}" if mode.k else ""))
    labels_pred = outputs.astype(np.int64) if outputs.ndim == 1 else np.argmax(np.nan_to_num(outputs, nan=-np.inf), axis=1)
    train_acc = metrics.accuracy(y[is_member], labels_pred[is_member])
    holdout_acc = metrics.accuracy(y[~is_member], labels_pred[~is_member])

    tr_sha, ho_sha = dataset_sha256(tr), dataset_sha256(ho)
    cache = ScoreCache(None if cache_dir is False else Path(cache_dir) if cache_dir else default_cache_dir())

    chosen = _select(attacks, mode)
    specs = registry()
    runnable: list[AttackSpec] = []
    skipped: list[SkippedAttack] = []
    for name in chosen:
        spec = specs[name]
        if mode.kind not in spec.kinds:
            skipped.append(SkippedAttack(name=name, reason=f"needs confidence scores; the target exposes {mode.kind} only"))
        elif spec.needs_reference and reference_models < (1 if name.endswith("offline") else 2):
            skipped.append(SkippedAttack(name=name, reason=f"needs reference models; --reference-models is {reference_models}"))
        else:
            runnable.append(spec)

    refs: ReferenceScores | None = None
    recipe_desc = None
    warnings_out: list[str] = []
    if any(s.needs_reference for s in runnable):
        recipe = _recipe(loaded, trainer, tr, seed, codec)
        recipe_desc = recipe.description
        ui.info(f"Reference models: {reference_models} ({recipe.description})")
        if recipe.kind == "surrogate":
            warnings_out.append(f"reference models: {recipe.description}, not the target's own training recipe; the "
                                "attacks are weaker than with the real recipe (see bench/results/formats.md), so a "
                                "PASS understates the risk; pass --trainer module:function to train them your way")
            ui.warn(warnings_out[-1])
        # The pool is both files, row for row (their hashes already cover every value), with the label
        # column named and encoded as here; hashing the 8 bytes per record of y is cheap.
        pool_fp = hashlib.sha256("|".join(["pool", tr_sha, ho_sha, repr((n_total, tr.X.shape[1])), repr(tr.label_name),
                                           repr(ho.label_name)]).encode() + y.astype("<i8").tobytes()).hexdigest()
        refs = train_reference_models(recipe, pool_rows, y, len(classes), reference_models, seed=seed, jobs=jobs, cache=cache,
                                      data_fp=pool_fp, backend=trainer_backend,
                                      on_progress=lambda d, t: ui.progress("training reference models", d, t))

    floor = probability_floor(mode.rounding)
    target_probs = to_probabilities(outputs, mode) if mode.has_scores else None
    ref_probs = None
    if refs is not None:
        seen = OutputMode("probabilities") if mode.kind == "logits" else mode
        ref_probs = to_probabilities(np.asarray(apply_output_mode(refs.probabilities, seen), dtype=np.float64), seen)
    # Only attacks that send queries look at the records' features (see AttackContext).
    ctx = AttackContext(X=pool_rows() if any(s.sends_queries for s in runnable) else np.empty((0, tr.X.shape[1])),
                        y=y, n_classes=len(classes), mode=mode, target_outputs=outputs, target_probs=target_probs,
                        reference_probs=ref_probs, reference_in=None if refs is None else refs.in_mask,
                        target=loaded.target, seed=seed, floor=floor)

    prior = member_prior if member_prior is not None else n_train / n_total
    options = {"attacks": [s.name for s in runnable], "n_bootstrap": n_bootstrap, "delta": delta, "prior": prior,
               "seed": seed, "mode": [mode.kind, mode.rounding, mode.k], "classes": [str(c) for c in classes],
               "reference_models": reference_models}
    # Reused only when every reference model came from the score cache, i.e. the exact arrays
    # the stored results were computed from; always written, for the next run.
    analysis = AnalysisCache(cache.directory, analysis_key(
        target_outputs=outputs, reference_keys=() if refs is None else refs.keys, y=y, is_member=is_member,
        options=options))
    reuse = refs is None or refs.trained == 0

    def report_of(r: AttackResult) -> AttackReport:
        return attack_report(r, data, classes, delta=delta, prior=prior, n_bootstrap=n_bootstrap, seed=seed)

    # Attacks that only score outputs already in hand run side by side; query-sending ones run after,
    # one at a time, so they respect the endpoint's rate and the query budget in order.
    offline_specs = [s for s in runnable if not s.sends_queries]
    stored = {s.name: analysis.load_attack(s.name) if reuse else None for s in offline_specs}
    done_count = sum(v is not None for v in stored.values())

    def scored(spec: AttackSpec) -> tuple[AttackResult, AttackReport]:
        nonlocal done_count
        result = run_attack(spec, ctx)
        report = report_of(result)
        analysis.store_attack(result, report)
        done_count += 1
        ui.progress("running attacks", done_count, len(runnable))
        return result, report

    to_run = [s for s in offline_specs if stored[s.name] is None]
    # The what-if variants need nothing from the attacks above: they share the same threads, so no
    # core idles while the longest attack finishes.
    from privaudit import whatif

    kept_rows = analysis.load_what_if() if what_if and reuse else None
    variant_tasks = (whatif.variant_tasks(ctx, None if refs is None else refs.probabilities, is_member)
                     if what_if and kept_rows is None and whatif.applicable(ctx) else [])
    # The split check (a few seconds of gradient boosting, or a cache hit) joins them too.
    split_task = functools.partial(check_split, tr.X, ho.X, seed=seed, cache_dir=cache.directory,
                                   data_key=f"{tr_sha}|{ho_sha}")
    tasks: list[Callable[[], Any]] = [split_task, *(functools.partial(scored, s) for s in to_run), *variant_tasks]
    done_tasks = thread_map(lambda task: task(), tasks, jobs)
    split, attack_done, variant_rows = done_tasks[0], done_tasks[1:1 + len(to_run)], done_tasks[1 + len(to_run):]
    by_name = {**{k: v for k, v in stored.items() if v is not None}, **dict(zip((s.name for s in to_run), attack_done))}
    if not split.passed:
        ui.warn(f"split check: {split.message}")
        warnings_out.append(f"split check: {split.message}")
    results: list[AttackResult] = []
    reports: list[AttackReport] = []
    for spec in runnable:
        if not spec.sends_queries:
            results.append(by_name[spec.name][0])
            reports.append(by_name[spec.name][1])
            continue
        from privaudit.attacks.membership.label_only import PERTURBATIONS

        extra = n_total * PERTURBATIONS
        if budget is not None and loaded.target.queries + extra > int(budget):
            skipped.append(SkippedAttack(name=spec.name, reason=f"would send {extra} more queries; --max-queries {budget} leaves {int(budget) - loaded.target.queries}"))
            continue
        ui.info(f"{spec.name} sends {extra} more queries to the target")
        try:
            results.append(run_attack(spec, ctx))
            reports.append(report_of(results[-1]))
        except QueryBudgetExceeded as exc:
            skipped.append(SkippedAttack(name=spec.name, reason=str(exc)))
        done_count += 1
        ui.progress("running attacks", done_count, len(runnable))
    if not results:
        raise NothingAuditable("no attack could run on this target: " + "; ".join(f"{s.name}: {s.reason}" for s in skipped))

    pol = policy or Policy()
    verdict, test = membership_verdict(results, data, delta=delta, confidence=pol.confidence, margin=pol.max_tpr_ratio,
                                       min_resolved_fpr=pol.min_resolved_fpr, seed=seed)
    best = verdict.attack
    exposed = [] if best is None else records_at_risk(
        test, next(r.scores for r in results if r.name == best), data, prior=prior, limit=RECORDS_AT_RISK, seed=seed)
    order = np.array([i for i, _ in exposed], dtype=np.int64)
    # Keyed with the training data's own hash: the data owner can match rows, while someone holding a
    # candidate record but not the whole training set cannot test it against the report.
    hashes = rows_sha256(tr.X[order], salt=tr_sha.encode()) if len(order) else []
    at_risk = [RecordRisk(index=i, risk=r, row_sha256=str(h)) for (i, r), h in zip(exposed, hashes)]
    dp = None
    if claimed_epsilon is not None:
        dp = dp_claim(results, data, claimed_epsilon, delta, split.passed, seed)
        if dp.contradicted:
            ui.warn(dp.message)

    membership = Membership(
        attacks=reports, best=best, train_accuracy=train_acc, holdout_accuracy=holdout_acc,
        generalization_gap=metrics.generalization_gap(train_acc, holdout_acc), member_prior=prior,
        records_at_risk=at_risk, verdict=verdict, dp_claim=dp, skipped=skipped, reference_recipe=recipe_desc,
        reference_models_trained=0 if refs is None else refs.trained)
    from privaudit import __version__

    what_if_rows: list[WhatIfRow] = []
    if kept_rows is not None:
        what_if_rows = kept_rows
    elif what_if and whatif.applicable(ctx):
        what_if_rows = [whatif.audited_row(ctx, is_member, {r.name: r.scores for r in results}), *variant_rows]
        analysis.store_what_if(what_if_rows)
    elif what_if:
        gap = _what_if_gap(mode)
        ui.warn(gap)
        warnings_out.append(gap)
    inversion_section = attribute_section = None
    if inversion or sensitive:
        from privaudit.inversion_audit import (InversionSetup, inversion_what_if, run_attribute_section,
                                               run_inversion_section)

        labels_tr, labels_ho = classes[y[is_member]], classes[y[~is_member]]
        if inversion:
            setup = InversionSetup(loaded, tr.X, labels_tr, seed)  # one box and one judge for both
            inversion_section = run_inversion_section(
                loaded, tr.X, labels_tr, ho.X, labels_ho, classes=classes, seed=seed, image_shape=image_shape,
                budget_per_class=inversion_budget, classes_to_invert=inversion_classes,
                include_records=include_records, reporter=ui, setup=setup)
            if what_if_rows:
                what_if_rows = inversion_what_if(
                    loaded, what_if_rows, mode, tr.X, labels_tr, ho.X, labels_ho, classes=classes, seed=seed,
                    image_shape=image_shape, budget_per_class=inversion_budget, classes_to_invert=inversion_classes,
                    reporter=ui, setup=setup)
        if sensitive:
            attribute_section = run_attribute_section(loaded, tr.X, labels_tr, ho.X, labels_ho, column=sensitive,
                                                      feature_names=tr.feature_names, seed=seed, reporter=ui)
    name = model_name or (Path(loaded.path).stem if loaded.path and not loaded.format == "http" else None) or "model"
    report = Report(
        provenance=Provenance(privaudit_version=__version__, libraries=_versions(), seed=seed,
                              command_line=list(command_line if command_line is not None else sys.argv),
                              sha256={"model": loaded.sha256, "train": tr_sha, "holdout": ho_sha},
                              created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
        model=ModelInfo(path=loaded.path, format=loaded.format, output_mode=mode.kind, rounding=mode.rounding, k=mode.k,
                        classes=[str(c) for c in classes]),
        data=DataInfo(train=n_train, holdout=len(ho.X), train_source=tr.source, holdout_source=ho.source, label=tr.label_name),
        split_check=SplitCheck(auc=split.auc, duplicates=split.duplicates, passed=split.passed, message=split.message),
        membership=membership, warnings=warnings_out, what_if=what_if_rows, model_name=name,
        data_sensitivity=pol.data_sensitivity,
        inversion=None if inversion_section is None else InversionSection.model_validate(inversion_section),
        attribute_inference=None if attribute_section is None else AttributeInferenceSection.model_validate(attribute_section))
    findings = evaluate_all(Evidence(model_name=name, report=report, policy=pol, controls=controls))
    return report.model_copy(update={"findings": findings})
