"""A gate that fails private models gets switched off: models that leak nothing must pass it.

32 audits with the default attacks and reference models, each a model whose true leakage is known to
be nil or bounded: 20 models that never saw the audited records (five families, 500 and 3,000 records
per side) and 12 differentially private logistic regressions (output perturbation, epsilon 0.5 to 8,
same sizes). None may FAIL attack_power, and `--fail-on low` must let every one through. The overfit
targets that must still FAIL are in test_audit.py, test_gate.py and the demo test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import privaudit
from privaudit.ci import gate
from privaudit.findings import CheckStatus
from privaudit.private_models import OutputPerturbedLogisticRegression

pytestmark = pytest.mark.slow

FAMILIES = ("logistic", "forest", "tree", "naive_bayes", "knn")
NEVER_SEEN = [(family, n, seed) for family in FAMILIES for n in (500, 3000) for seed in (0, 1)]
DP = [(eps, n) for eps in (0.5, 1.0, 2.0, 4.0, 8.0, 8.0) for n in (500, 3000)]


def _task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three disjoint blocks of n records from one binary distribution (members, holdout, other)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=3 * n, n_features=20, n_informative=10, n_redundant=4, flip_y=0.05,
                               random_state=seed)
    return X, y


def _model(family: str, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    return {"logistic": LogisticRegression(max_iter=2000), "forest": RandomForestClassifier(30, random_state=seed),
            "tree": DecisionTreeClassifier(random_state=seed), "naive_bayes": GaussianNB(),
            "knn": KNeighborsClassifier(15)}[family]


def _audit(model: Any, X: np.ndarray, y: np.ndarray, n: int, seed: int) -> privaudit.Report:
    return privaudit.audit(model, (X[:n], y[:n]), (X[n:2 * n], y[n:2 * n]), reference_models=4, seed=seed,
                           cache_dir=False, what_if=False, n_bootstrap=0)


def _passes(report: privaudit.Report) -> None:
    f = next(x for x in report.findings if x.rule_id == "ATLAS-EXF-003")
    power = next(c for c in f.checks if c.check == "attack_power")
    assert power.status != CheckStatus.FAIL, power.evidence
    assert report.membership.records_at_risk == []  # no measurable leakage lists no one
    failing = [c.check for x in report.findings for c in x.checks if c.status == CheckStatus.FAIL]
    assert gate.exit_code(report, "low") == 0, failing


@pytest.mark.parametrize(("family", "n", "seed"), NEVER_SEEN)
def test_a_model_that_never_saw_the_records_passes(family: str, n: int, seed: int) -> None:
    X, y = _task(n, seed)
    model = _model(family, seed).fit(X[2 * n:], y[2 * n:])  # trained on the third block only
    _passes(_audit(model, X, y, n, seed))


@pytest.mark.parametrize(("epsilon", "n"), DP)
def test_a_differentially_private_model_passes(epsilon: float, n: int) -> None:
    seed = int(epsilon * 10) + n
    X, y = _task(n, seed)
    model = OutputPerturbedLogisticRegression(epsilon=epsilon, random_state=seed).fit(X[:n], y[:n])
    _passes(_audit(model, X, y, n, seed))
