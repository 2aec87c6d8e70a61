"""Membership-inference attacks. Each module registers one attack with :func:`register_attack`.

An attack sees what an auditor-as-attacker legitimately has: the target's outputs on the audited
records, their labels, the reference models' outputs (and which records each was trained on), and,
for query-based attacks, the target itself. It never sees which audited records are members.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from privaudit.target import OutputKind, OutputMode, Target

SCORE_KINDS: frozenset[OutputKind] = frozenset({"probabilities", "logits", "top_k"})
ALL_KINDS: frozenset[OutputKind] = SCORE_KINDS | {"label"}

# Module names under attacks/membership/; importing each registers its attacks.
ATTACK_MODULES = ("loss", "shadow", "lira", "rmia", "ensemble", "label_only")


@dataclass(frozen=True)
class AttackContext:
    """Inputs shared by all attacks on one audit."""

    # Audited records (train rows first, then holdout rows). Only attacks registered with
    # sends_queries=True may rely on it; the audit passes an empty (0, d) array when none of those runs.
    X: NDArray[np.float64]
    y: NDArray[np.int64]  # their labels, as class indices
    n_classes: int
    mode: OutputMode
    target_outputs: NDArray[Any]  # the target's answers on X, as the adapter returned them
    target_probs: NDArray[np.float64] | None  # those answers as full probabilities (None if label-only)
    reference_probs: NDArray[np.float64] | None  # (K, n, C): reference outputs as the target would expose them
    reference_in: NDArray[np.bool_] | None  # (K, n): record i was in reference model k's training half
    target: Target | None  # for attacks that send their own queries
    seed: int
    floor: float  # probability floor given the output's rounding
    # Signals several attacks derive from the same arrays (e.g. RMIA's tempered likelihoods), kept for
    # the life of this context. Not an __init__ argument: ``dataclasses.replace`` starts a fresh one.
    memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_reference(self) -> int:
        return 0 if self.reference_in is None else int(self.reference_in.shape[0])

    def memoised(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, evaluated once per key for this context."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


@dataclass(frozen=True)
class AttackResult:
    """Per-record membership scores (higher = more likely a member) and what the attack cost."""

    name: str
    scores: NDArray[np.float64]
    queries: int = 0
    reference_models: int = 0
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


AttackFn = Callable[[AttackContext], AttackResult]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    fn: AttackFn
    kinds: frozenset[OutputKind]
    needs_reference: bool
    sends_queries: bool
    summary: str


_REGISTRY: dict[str, AttackSpec] = {}


def register_attack(
    name: str,
    *,
    kinds: frozenset[OutputKind] = SCORE_KINDS,
    needs_reference: bool = False,
    sends_queries: bool = False,
    summary: str = "",
) -> Callable[[AttackFn], AttackFn]:
    def deco(fn: AttackFn) -> AttackFn:
        _REGISTRY[name] = AttackSpec(name, fn, kinds, needs_reference, sends_queries, summary)
        return fn

    return deco


def registry() -> dict[str, AttackSpec]:
    for module in ATTACK_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_REGISTRY)


def run_attack(spec: AttackSpec, ctx: AttackContext) -> AttackResult:
    """Run one attack and time it."""
    start = time.perf_counter()
    before = ctx.target.queries if ctx.target is not None else 0
    result = spec.fn(ctx)
    sent = (ctx.target.queries - before) if ctx.target is not None else 0
    return AttackResult(
        name=spec.name,
        scores=np.asarray(result.scores, dtype=np.float64),
        queries=max(result.queries, sent),
        reference_models=result.reference_models,
        seconds=time.perf_counter() - start,
        params=result.params,
    )
