"""The inversion part of an audit: MI-Face judged by an independent evaluator, and attribute inference.

Used by the sections stage (privaudit.audit.stages.sections); both section functions return the report's
``inversion`` / ``attribute_inference`` sections as plain dicts.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from privaudit.attacks.inversion import run_inversion
from privaudit.attacks.inversion import to_report_dict as inversion_report
from privaudit.attacks.inversion.attribute import attribute_inference
from privaudit.attacks.inversion.attribute import to_report_dict as attribute_report
from privaudit.attacks.inversion.evaluate import model_family, score, train_evaluator
from privaudit.errors import ConfigError
from privaudit.models import LoadedModel
from privaudit.progress import Reporter
from privaudit.report.schema import WhatIfRow
from privaudit.target import OutputMode, ServedTarget


class InversionSetup:
    """What every inversion run of one audit shares: the attacker's box and the judge, trained once."""

    def __init__(self, loaded: LoadedModel, X_train: NDArray[np.float64], y_train: NDArray[Any], seed: int) -> None:
        self.loaded, self.X_train, self.y_train, self.seed = loaded, X_train, y_train, seed
        # The attacker's box: the range of the training features (documented; a real attacker would use
        # the valid input range of the API, which for images is the same).
        self.bounds = (X_train.min(axis=0), X_train.max(axis=0))
        self._judge: Any = None

    def judge(self) -> Any:

        if self._judge is None:
            self._judge = train_evaluator(self.X_train, self.y_train, target_family=model_family(self.loaded.estimator),
                                          seed=self.seed, bounds=self.bounds)
        return self._judge


def run_inversion_section(loaded: LoadedModel, X_train: NDArray[np.float64], y_train: NDArray[Any],
                          X_holdout: NDArray[np.float64], y_holdout: NDArray[Any], *, classes: NDArray[Any],
                          seed: int, image_shape: tuple[int, ...] | None, budget_per_class: int,
                          classes_to_invert: Sequence[Any] | None, include_records: bool,
                          reporter: Reporter, setup: InversionSetup | None = None) -> dict[str, Any]:
    """MI-Face on every class (or the ones asked for), scored by a judge of another model family."""

    if image_shape is not None and int(np.prod(image_shape)) != X_train.shape[1]:
        raise ConfigError(f"--image-shape {'x'.join(map(str, image_shape))}: has {int(np.prod(image_shape))} pixels "
                          f"but the data has {X_train.shape[1]} features")
    setup = setup or InversionSetup(loaded, X_train, y_train, seed)
    bounds = setup.bounds
    reporter.info("Model inversion: MI-Face on " + (f"{len(classes_to_invert)} classes" if classes_to_invert else f"all {len(classes)} classes"))
    result = run_inversion(loaded.target, n_classes=len(classes), n_features=X_train.shape[1], bounds=bounds,
                           model=loaded.estimator, classes_to_invert=classes_to_invert,
                           max_queries_per_class=budget_per_class, seed=seed, image_shape=image_shape, reporter=reporter)
    scores = None
    if result.mode != "refused":
        scores = score(result, setup.judge(), X_train, y_train, X_holdout, y_holdout, image_shape=image_shape)
    # Reconstructions are the attack's own output, the evidence a reader needs to judge it; for images
    # they are always kept. Class means summarise real training records, so they need --include-records.
    section = inversion_report(result, scores, include_reconstructions=include_records or image_shape is not None)
    if image_shape is not None:
        section["image_shape"] = list(image_shape)
        if include_records and result.mode != "refused":
            labels = np.asarray(y_train)
            section["class_means"] = [X_train[labels == classes[c.class_index]].mean(axis=0).tolist()
                                      for c in result.classes]
    return section


def inversion_what_if(loaded: LoadedModel, rows: Sequence[WhatIfRow], audited_mode: OutputMode,
                      X_train: NDArray[np.float64], y_train: NDArray[Any], X_holdout: NDArray[np.float64],
                      y_holdout: NDArray[Any], *, classes: NDArray[Any], seed: int,
                      image_shape: tuple[int, ...] | None, budget_per_class: int,
                      classes_to_invert: Sequence[Any] | None, reporter: Reporter,
                      setup: InversionSetup | None = None) -> list[WhatIfRow]:
    """The what-if rows with inversion columns: black-box MI-Face against the model served each way.

    A caller of a served model has no gradients, so every row is attacked black-box (the main
    inversion section may be white-box), with the same query budget and the same independent judge.
    """

    setup = setup or InversionSetup(loaded, X_train, y_train, seed)
    bounds = setup.bounds
    out: list[WhatIfRow] = []
    for row in rows:
        served = ServedTarget(loaded.target, audited_mode, OutputMode(row.output_mode, rounding=row.rounding, k=row.k),  # type: ignore[arg-type]
                              row.temperature)
        reporter.info(f"What-if inversion: black-box MI-Face against the model served '{row.serving}'")
        result = run_inversion(served, n_classes=len(classes), n_features=X_train.shape[1], bounds=bounds,
                               mode="black-box", classes_to_invert=classes_to_invert,
                               max_queries_per_class=budget_per_class, seed=seed, image_shape=image_shape,
                               reporter=reporter)
        update: dict[str, Any] = {"inversion_mode": result.mode, "inversion_queries": result.queries_total}
        if result.mode != "refused":
            update["inversion_attack_accuracy"] = score(result, setup.judge(), X_train, y_train, X_holdout, y_holdout,
                                                        image_shape=image_shape).attack_accuracy
        out.append(row.model_copy(update=update))
    return out


def run_attribute_section(loaded: LoadedModel, X_train: NDArray[np.float64], y_train: NDArray[Any],
                          X_holdout: NDArray[np.float64], y_holdout: NDArray[Any], *, column: str,
                          feature_names: Sequence[str], seed: int, reporter: Reporter) -> dict[str, Any]:
    """Infer the sensitive column of every train and holdout record; compare with model-free baselines."""

    names = list(feature_names)
    if column not in names:
        raise ConfigError(f"--sensitive {column}: no such feature column; columns are {', '.join(names[:20])}"
                          + (" ..." if len(names) > 20 else ""))
    reporter.info(f"Attribute inference on column '{column}'")
    result = attribute_inference(loaded.target, X_train, y_train, X_holdout, y_holdout, column=names.index(column),
                                 column_name=column, seed=seed)
    return attribute_report(result)
