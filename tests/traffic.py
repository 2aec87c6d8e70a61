"""Synthetic inference traffic for the guard's monitoring tests: probing attacks and benign clients.

Everything is seeded. The target is a logistic regression on scikit-learn's digits (8x8 images,
pixel values 0-16), whose exact input gradient stands in for whatever gradient an attacker has.

Attacks (the query patterns, not full attacks):
* :func:`jacobian_extraction` -- Papernot et al. 2017: seed points, then each round adds every point
  moved by a small signed-gradient step;
* :func:`nes_inversion` -- black-box MI-Face: NES gradient estimates from antithetic Gaussian
  perturbations around the current reconstruction, then a step, repeated;
* :func:`label_only_mi` -- each candidate record followed by many noisy copies;
* :func:`boundary_walk` -- HopSkipJump-like: binary searches between two differently-labelled
  points, gradient estimation around the boundary point, a step, again.

Benign:
* :func:`benign_sessions` -- clients sending in-distribution rows (fresh draws from a Gaussian per
  digit class fitted to digits, plus some real digits rows that other clients send too), with retries,
  duplicates, a few addresses each, and a group of users behind one address;
* :func:`lime_explainer` -- a few hundred superpixel-masking perturbations of one record.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator

import numpy as np
from numpy.typing import NDArray

from privaudit.guard.events import QueryEvent

T0 = 1_700_000_000.0
PIXEL_MAX = 16.0


@dataclass(frozen=True)
class Request:
    principal: str
    time: float
    ip: str
    rows: NDArray[np.float64]


class Target:
    """Digits and a logistic regression fitted to them; the class-conditional sampler is built on first use."""

    def __init__(self, seed: int = 0) -> None:
        from sklearn.datasets import load_digits
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        self.X, self.y = load_digits(return_X_y=True)
        self.seed = seed
        # Fitted on pixels / 16 (it converges in a few dozen steps) and on one thread: BLAS threads
        # fighting over two busy cores once made this take a minute.
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model = LogisticRegression(max_iter=500, C=1.0).fit(self.X / PIXEL_MAX, self.y)

    def proba(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.model.predict_proba(np.atleast_2d(rows) / PIXEL_MAX)

    def grad(self, x: NDArray[np.float64], c: int) -> NDArray[np.float64]:
        """d p_c / d x for the softmax model (in pixel units)."""
        p = self.proba(x[None])[0]
        W = self.model.coef_ / PIXEL_MAX
        return p[c] * (W[c] - p @ W)

    @cached_property
    def classes(self) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
        """Per-class mean and Cholesky factor of the (slightly regularised) covariance."""
        out = []
        for c in np.unique(self.y):
            Xc = self.X[self.y == c]
            cov = np.cov(Xc, rowvar=False) + 0.5 * np.eye(Xc.shape[1])
            out.append((Xc.mean(axis=0), np.linalg.cholesky(cov)))
        return out

    def natural(self, n: int, rng: np.random.Generator) -> NDArray[np.float64]:
        """Fresh in-distribution rows: draws from a Gaussian per digit class fitted to the data, rounded
        and clipped like pixels (never a copy of a dataset row)."""
        labels = rng.integers(len(self.classes), size=n)
        z = rng.normal(size=(n, self.X.shape[1]))
        out = np.empty_like(z)
        for c, (mean, chol) in enumerate(self.classes):
            idx = labels == c
            out[idx] = mean + z[idx] @ chol.T
        return np.clip(np.round(out), 0, PIXEL_MAX)


def _batches(principal: str, rows: NDArray[np.float64], rng: np.random.Generator, start: float,
             batch: int = 10, gap: float = 1.0, ip: str = "203.0.113.7") -> list[Request]:
    out, t = [], start
    for i in range(0, len(rows), batch):
        out.append(Request(principal, t, ip, rows[i:i + batch]))
        t += gap * rng.uniform(0.5, 1.5)
    return out


def jacobian_extraction(target: Target, rng: np.random.Generator, principal: str = "atk-jacobian",
                        start: float = T0, seeds: int = 10, rounds: int = 5, lam: float = 1.6) -> list[Request]:
    """Papernot et al.'s substitute training: label the set through the target, fit a substitute,
    add every point moved by ``lam`` along the sign of the substitute's gradient for its label."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    points = target.X[rng.choice(len(target.X), seeds, replace=False)]
    queried = [points]
    labels = target.proba(points).argmax(axis=1)
    for r in range(rounds - 1):
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            sub = LogisticRegression(max_iter=200).fit(points / PIXEL_MAX, labels)
        W = sub.coef_ if len(sub.classes_) > 2 else np.vstack([-sub.coef_[0], sub.coef_[0]])
        p = sub.predict_proba(points / PIXEL_MAX)
        col = np.searchsorted(sub.classes_, labels)
        grads = p[np.arange(len(points)), col][:, None] * (W[col] - p @ W)
        sign = 1.0 if r % 2 == 0 else -1.0  # the paper's periodic step reversal
        new = np.clip(points + sign * lam * np.sign(grads), 0, PIXEL_MAX)
        queried.append(new)
        labels = np.concatenate([labels, target.proba(new).argmax(axis=1)])
        points = np.vstack([points, new])
    return _batches(principal, np.vstack(queried), rng, start)


def nes_inversion(target: Target, rng: np.random.Generator, principal: str = "atk-nes", start: float = T0,
                  label: int = 3, iters: int = 12, pairs: int = 10, sigma: float = 0.3, step: float = 0.5) -> list[Request]:
    x = target.X.mean(axis=0)
    rows = []
    for _ in range(iters):
        u = rng.normal(size=(pairs, len(x)))
        batch = np.vstack([x + sigma * u, x - sigma * u])
        rows.append(batch)
        p = target.proba(batch)[:, label]
        g = ((p[:pairs] - p[pairs:])[:, None] * u).sum(axis=0) / (2 * sigma * pairs)
        x = np.clip(x + step * np.sign(g), 0, PIXEL_MAX)
    return _batches(principal, np.vstack(rows), rng, start, batch=2 * pairs, gap=2.0)


def label_only_mi(target: Target, rng: np.random.Generator, principal: str = "atk-label-only", start: float = T0,
                  records: int = 5, copies: int = 40, sigma: float = 0.5) -> list[Request]:
    rows = []
    for x in target.X[rng.choice(len(target.X), records, replace=False)]:
        rows.append(x[None])
        rows.append(x + rng.normal(0, sigma, size=(copies, len(x))))
    return _batches(principal, np.vstack(rows), rng, start, batch=1, gap=0.5)


def boundary_walk(target: Target, rng: np.random.Generator, principal: str = "atk-boundary", start: float = T0,
                  iters: int = 8, bisections: int = 10, probes: int = 12, delta: float = 0.5) -> list[Request]:
    labels = target.proba(target.X).argmax(axis=1)
    x_target = target.X[0]
    other = target.X[rng.choice(np.flatnonzero(labels != labels[0]))]
    rows = []
    for _ in range(iters):
        lo, hi = 0.0, 1.0  # mix 0 = x_target's class, 1 = the other class
        for _ in range(bisections):
            mid = (lo + hi) / 2
            point = (1 - mid) * x_target + mid * other
            rows.append(point[None])
            if target.proba(point[None]).argmax() == labels[0]:
                lo = mid
            else:
                hi = mid
        boundary = (1 - hi) * x_target + hi * other
        u = rng.normal(size=(probes, len(boundary)))
        rows.append(boundary + delta * u)  # gradient estimation right at the boundary
        # step back towards x_target, staying on the adversarial side (HopSkipJump's geometric progress)
        other = boundary + 0.3 * (x_target - boundary) + rng.normal(0, 0.2, size=boundary.shape)
        if target.proba(other[None]).argmax() == labels[0]:
            other = boundary
    return _batches(principal, np.vstack(rows), rng, start, batch=1, gap=0.5)


def lime_explainer(target: Target, rng: np.random.Generator, principal: str = "explainer", start: float = T0,
                   samples: int = 300) -> list[Request]:
    """LIME on an image: 2x2-pixel superpixels switched off (set to 0) at random, half on average."""
    x = target.X[int(rng.integers(len(target.X)))].reshape(8, 8)
    masks = rng.random((samples, 4, 4)) < 0.5
    rows = np.stack([x * np.kron(m, np.ones((2, 2))) for m in masks]).reshape(samples, -1)
    return _batches(principal, np.vstack([x.reshape(1, -1), rows]), rng, start, batch=50, gap=3.0)


def benign_sessions(target: Target, rng: np.random.Generator, principals: int = 100, nat_group: int = 20,
                    start: float = T0, span: float = 3600.0, min_queries: int = 50,
                    max_queries: int = 250) -> list[Request]:
    """Ordinary clients; the first ``nat_group`` of them share one address."""
    out: list[Request] = []
    for i in range(principals):
        name = f"user-{i:03d}"
        n = int(rng.integers(min_queries, max_queries + 1))
        rows = target.natural(n, rng)
        shared = rng.random(n) < 0.2  # popular rows: real digits images, which other clients send too
        rows[shared] = target.X[rng.integers(len(target.X), size=int(shared.sum()))]
        ips = ["198.51.100.1"] if i < nat_group else [f"10.{i}.0.{k}" for k in range(int(rng.integers(1, 4)))]
        t = start + rng.uniform(0, span / 2)
        gap = rng.uniform(2.0, 20.0)
        sent: list[NDArray[np.float64]] = []
        j = 0
        while j < n:
            size = int(rng.integers(1, 5))
            batch = rows[j:j + size]
            j += size
            if sent and rng.random() < 0.05:  # a duplicate: a row this client sent earlier
                batch = np.vstack([batch, sent[int(rng.integers(len(sent)))][:1]])
            ip = ips[int(rng.integers(len(ips)))]
            out.append(Request(name, t, ip, batch))
            sent.append(batch)
            if rng.random() < 0.1:  # a retry: the same request again a moment later
                out.append(Request(name, t + rng.uniform(0.1, 2.0), ip, batch))
            t += rng.exponential(gap)
    return out


def rotating_ips(target: Target, rng: np.random.Generator, principal: str = "atk-rotating", start: float = T0,
                 requests: int = 40) -> list[Request]:
    """Ordinary-looking rows, but every request from a different address."""
    rows = target.natural(requests * 2, rng)
    return [Request(principal, start + 3.0 * i, f"192.0.2.{i % 250}", rows[2 * i:2 * i + 2]) for i in range(requests)]


def steady_then_burst(target: Target, rng: np.random.Generator, principal: str = "atk-volume", start: float = T0,
                      minutes: int = 30, per_minute: int = 6, burst: int = 400) -> list[Request]:
    """A client with a steady habit that suddenly sends ``burst`` queries in one minute."""
    out = []
    for m in range(minutes):
        for k in range(per_minute):
            out.append(Request(principal, start + 60 * m + 60 * k / per_minute, "10.9.9.9", target.natural(1, rng)))
    rows = target.natural(burst, rng)
    t = start + 60 * minutes
    for i in range(0, burst, 10):
        out.append(Request(principal, t + 50 * i / burst, "10.9.9.9", rows[i:i + 10]))
    return out


def coordinate_probe(target: Target, principal: str = "atk-coordinate", start: float = T0, queries: int = 200,
                     step: float = 0.05 * PIXEL_MAX) -> list[Request]:
    """A finite-difference scan of one digit: query i moves feature i mod d by a multiple of ``step``
    (0.05 of the pixel range), one row per request."""
    x = target.X[7]
    rows = []
    for i in range(queries):
        row = x.copy()
        row[i % len(x)] += step * (1 + i // len(x))
        rows.append(row)
    return [Request(principal, start + 0.5 * i, "203.0.113.9", r[None]) for i, r in enumerate(rows)]


def with_burner(requests: list[Request], burner: str = "burner") -> list[Request]:
    """Each request sent first by a throwaway key (from another address), then by the real one."""
    out = []
    for r in requests:
        out.append(Request(burner, r.time - 0.1, "198.51.100.77", r.rows))
        out.append(r)
    return out


def merge(*streams: Iterable[Request]) -> list[Request]:
    return sorted((r for s in streams for r in s), key=lambda r: r.time)


def events(target: Target, requests: Iterable[Request], tier: str = "default") -> Iterator[QueryEvent]:
    for i, r in enumerate(requests):
        yield QueryEvent(principal=r.principal, tier=tier, time=r.time, client_ip=r.ip, inputs=r.rows,
                         outputs=target.proba(r.rows), decision="allowed", status=200, request_id=f"req-{i}")
