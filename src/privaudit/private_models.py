"""Models with a differential-privacy guarantee, for checking privaudit's verdicts on known-private targets.

They are small, exact mechanisms whose epsilon holds by proof, so an audit that FAILs them is wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class OutputPerturbedLogisticRegression(ClassifierMixin, BaseEstimator):
    """epsilon-DP binary logistic regression by output perturbation (Chaudhuri et al. 2011, Alg. 1).

    Each record is mapped into the unit ball by a fixed, data-independent transform (rows clipped to
    norm ``radius``, divided by ``radius``, scaled by 1/sqrt(2), and a constant 1/sqrt(2) appended for
    the intercept), so ||x|| <= 1. The weights w* minimise
        J(w) = (1/n) sum_i log(1 + exp(-y_i w.x_i)) + (lam/2) ||w||^2,
    whose L2 sensitivity is 2/(n lam) when ||x|| <= 1 and the loss is 1-Lipschitz. The released
    weights are w* + b, b with density proportional to exp(-(n lam epsilon / 2) ||b||): its norm is
    Gamma(shape=d, scale=2/(n lam epsilon)) and its direction is uniform on the sphere.
    ``epsilon=None`` releases w* unperturbed (the non-private baseline).
    """

    def __init__(self, epsilon: float | None = 1.0, lam: float = 1e-2, radius: float = 8.0,
                 random_state: int | None = None) -> None:
        self.epsilon = epsilon
        self.lam = lam
        self.radius = radius
        self.random_state = random_state

    def _embed(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.maximum(norms / self.radius, 1.0) / self.radius  # ||row|| <= 1
        return np.hstack([X, np.ones((len(X), 1))]) / np.sqrt(2.0)

    def fit(self, X: Any, y: Any) -> "OutputPerturbedLogisticRegression":
        from scipy.optimize import minimize

        Z = self._embed(X)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError("binary labels only")
        s = np.where(y == self.classes_[1], 1.0, -1.0)
        n, d = Z.shape

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            m = s * (Z @ w)
            loss = np.logaddexp(0.0, -m).mean() + 0.5 * self.lam * w @ w
            grad = -(Z.T @ (s * np.exp(-np.logaddexp(0.0, m)))) / n + self.lam * w
            return float(loss), grad

        # J is lam-strongly convex, so a tight L-BFGS solve reaches the unique minimiser the proof needs.
        res = minimize(objective, np.zeros(d), jac=True, method="L-BFGS-B",
                       options={"maxiter": 10_000, "gtol": 1e-12, "ftol": 1e-15})
        w = res.x
        self.optimiser_grad_norm_ = float(np.linalg.norm(res.jac))
        if self.epsilon is not None:
            rng = np.random.default_rng(self.random_state)
            norm = rng.gamma(shape=d, scale=2.0 / (n * self.lam * self.epsilon))
            direction = rng.normal(size=d)
            w = w + norm * direction / np.linalg.norm(direction)
            self.noise_norm_ = float(norm)
        self.coef_ = w
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return self._embed(X) @ self.coef_

    def predict_proba(self, X: Any) -> np.ndarray:
        z = self.decision_function(X)
        p1 = np.exp(-np.logaddexp(0.0, -z))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]
