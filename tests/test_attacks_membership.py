"""Each attack on known answers: a memorising model is caught, a model that never saw the records is not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import privaudit
from privaudit.attacks.membership import registry
from tests.conftest import ALL_ATTACKS, Case


def _run(case: Case, **kw: Any) -> privaudit.Report:
    return privaudit.audit(case.model, case.train, case.holdout, reference_models=4, seed=0, attacks=ALL_ATTACKS,
                           n_bootstrap=50, **kw)


@pytest.fixture(scope="module")
def memorised_report(memorised: Case, tmp_path_factory: Any) -> privaudit.Report:
    return _run(memorised, cache_dir=tmp_path_factory.mktemp("c1"))


@pytest.fixture(scope="module")
def unseen_report(unseen: Case, tmp_path_factory: Any) -> privaudit.Report:
    return _run(unseen, cache_dir=tmp_path_factory.mktemp("c2"))


def test_every_registered_attack_is_exercised() -> None:
    assert sorted(registry()) == sorted(ALL_ATTACKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_memorising_model_is_caught(memorised_report: privaudit.Report, name: str) -> None:
    attack = next(a for a in memorised_report.membership.attacks if a.name == name)
    floor = 0.75 if name == "label_only" else 0.9
    assert attack.auc > floor, (name, attack.auc)
    if name != "label_only":  # label-only scores are coarse; their low-FPR tail is all ties
        assert attack.tpr_at_fpr["0.01"] is not None and attack.tpr_at_fpr["0.01"] > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_model_that_never_saw_the_records_scores_chance(unseen_report: privaudit.Report, name: str) -> None:
    attack = next(a for a in unseen_report.membership.attacks if a.name == name)
    assert abs(attack.auc - 0.5) < 0.06, (name, attack.auc)
    assert attack.epsilon_lower_bound < 0.5


@pytest.mark.slow
def test_reference_attacks_beat_the_population_attack_on_a_generalising_mlp() -> None:
    # On a well-generalising model the loss threshold barely works; calibrating per record with
    # reference models is what finds the exposed ones (Carlini et al. 2022's central claim).
    from sklearn.neural_network import MLPClassifier

    from privaudit import datasets
    from tests.conftest import quiet_fit

    s = datasets.purchase_like(1600, n_features=80, n_classes=8, flip=0.3, seed=5)
    model = quiet_fit(MLPClassifier((64,), max_iter=200, random_state=0), s.X_train, s.y_train)
    rep = privaudit.audit(model, (s.X_train, s.y_train), (s.X_holdout, s.y_holdout), reference_models=4, seed=0,
                          attacks=["loss", "rmia_online", "lira_offline", "ensemble_online"], n_bootstrap=0,
                          cache_dir=False)
    auc = {a.name: a.auc for a in rep.membership.attacks}
    assert auc["rmia_online"] > auc["loss"] + 0.03, auc
    # 1,600 records make three difficulty groups: the ensemble runs with both of its members here.
    ensemble = next(a for a in rep.membership.attacks if a.name == "ensemble_online")
    assert ensemble.params["members"] == ["rmia_online", "lira_online (binned variance)"]
    assert auc["ensemble_online"] > auc["loss"] + 0.03, auc
    assert auc["lira_offline"] > auc["loss"], auc


def test_label_only_counts_its_queries(memorised: Case) -> None:
    rep = privaudit.audit(memorised.model, memorised.train, memorised.holdout, reference_models=0, seed=0,
                          attacks=["label_only"], n_bootstrap=0, cache_dir=False)
    from privaudit.attacks.membership.label_only import PERTURBATIONS

    (attack,) = rep.membership.attacks
    n = len(memorised.train[0]) + len(memorised.holdout[0])
    assert attack.queries == n * PERTURBATIONS


def test_scores_do_not_depend_on_membership_labels(memorised: Case) -> None:
    # Swapping which rows are called train and holdout must give each row the same score: attacks
    # never see the membership labels.
    from privaudit.attacks.membership import AttackContext, run_attack
    from privaudit.audit.reference import recipe_from_estimator, train_reference_models
    from privaudit.target import OutputMode

    X = np.vstack([memorised.train[0], memorised.holdout[0]])
    y = np.concatenate([memorised.train[1], memorised.holdout[1]])
    recipe = recipe_from_estimator(memorised.model, target_fingerprint="t", feature_names=None)
    refs = train_reference_models(recipe, X, y, 8, 4, seed=0, jobs=1)
    probs = memorised.model.predict_proba(X)
    ctx = AttackContext(X=X, y=y, n_classes=8, mode=OutputMode("probabilities"), target_outputs=probs, target_probs=probs,
                        reference_probs=refs.probabilities, reference_in=refs.in_mask, target=None, seed=0, floor=1e-300)
    for name in ("lira_online", "rmia_offline", "ensemble_online"):
        s1 = run_attack(registry()[name], ctx).scores
        s2 = run_attack(registry()[name], ctx).scores
        np.testing.assert_array_equal(s1, s2)
