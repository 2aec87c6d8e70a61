"""Per-principal rate limits on the ``limits`` library (moving window, in memory or in Redis).

Every rate of the principal's tier must hold, all or nothing. A request with n records costs n: a
batch of 1000 rows is 1000 queries to an attacker, so it spends 1000 of the quota.

Concurrency: within one guard process a per-principal lock wraps "test every window, then hit every
window", so nothing is over-admitted or over-counted. Across processes sharing Redis each hit is one
atomic Lua script that only records an entry when the window has room; a request is admitted only if
every hit succeeded, so replicas can over-count (fail safe) but never over-admit.

The limiter is the synchronous one: it binds to no event loop, so the same guard works under
uvicorn, a test client, or as middleware in someone else's loop. With Redis it runs in a worker
thread (it waits on the network). In memory it is :class:`LocalMovingWindow`, run inline on the event
loop: the ``limits`` library's memory storage starts a timer thread every 10 ms while requests flow,
and on a busy host each start stalled the event loop waiting for the new thread to be scheduled.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from collections import deque

from limits import RateLimitItem, WindowStats, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool

from privaudit.guard.config import LimitsConfig
from privaudit.guard.redact import redact

log = logging.getLogger("privaudit.guard")

THROTTLE_DIVISOR = 10  # a principal under a "throttle" verdict gets a tenth of its tier's rates
_REDIS_TIMEOUT = 1.0  # s; a dead Redis must fail a request fast, not hang it


@dataclass(frozen=True)
class LimitResult:
    """The limiter's answer, and the numbers for the RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-07)."""

    allowed: bool
    limit: int  # the quota of the window reported (the exhausted one on refusal, else the tightest)
    remaining: int
    reset: int  # seconds until that window frees room
    policy: str  # every window of the tier, e.g. "20;w=1, 120;w=60"
    storage_error: bool = False
    cost: int = 0  # records the refused request asked for
    largest: int | None = None  # set when the request can never fit: the most records one request may carry
    window: int = 0  # seconds of the window that refused it (for the message)

    @property
    def message(self) -> str:
        if self.largest is not None:
            return (f"rate limit exceeded: a request of {self.cost} records can never fit the quota "
                    f"({self.limit} records per {self.window} s); send at most {self.largest} records per request")
        return "rate limit exceeded; retry later"

    def headers(self) -> dict[str, str]:
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
            "RateLimit-Policy": self.policy,
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, self.reset))
        return out


def _policy(items: list[RateLimitItem]) -> str:
    return ", ".join(f"{item.amount};w={item.get_expiry()}" for item in items)


def _scaled(items: list[RateLimitItem], divisor: int) -> list[RateLimitItem]:
    return [type(item)(max(1, item.amount // divisor), item.multiples, item.namespace) for item in items]


def _storage_options(uri: str) -> dict[str, Any]:
    if uri.startswith("redis"):
        return {"socket_connect_timeout": _REDIS_TIMEOUT, "socket_timeout": _REDIS_TIMEOUT}
    return {}


class LocalMovingWindow:
    """The moving-window strategy in this process's memory, without threads: per window key a deque of
    (time, cost) entries and their running sum. Same answers as ``MovingWindowRateLimiter`` on
    ``memory://``: ``test``, ``hit`` and ``get_window_stats``. Keys nobody touched for a whole window
    are swept every ``SWEEP_EVERY`` hits, so idle principals cost no memory."""

    SWEEP_EVERY = 10_000

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self._windows: dict[str, tuple[deque[tuple[float, int]], list[int], float]] = {}
        self._keys: dict[tuple[RateLimitItem, tuple[str, ...]], str] = {}
        self._hits = 0

    def _window(self, item: RateLimitItem, *identifiers: str) -> tuple[deque[tuple[float, int]], list[int], float]:
        # key_for escapes every identifier on every call, six calls per request: remember the keys
        # (bounded, like the windows, by the principals active within SWEEP_EVERY hits).
        key = self._keys.get((item, identifiers))
        if key is None:
            if len(self._keys) >= self.SWEEP_EVERY:
                self._keys.clear()
            key = self._keys[(item, identifiers)] = item.key_for(*identifiers)
        expiry = float(item.get_expiry())
        entry = self._windows.get(key)
        if entry is None:
            entry = self._windows[key] = (deque(), [0], expiry)
        entries, total, _ = entry
        horizon = self.clock() - expiry
        while entries and entries[0][0] <= horizon:
            total[0] -= entries.popleft()[1]
        return entry

    def test(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        _, total, _ = self._window(item, *identifiers)
        return total[0] <= item.amount - cost

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        entries, total, _ = self._window(item, *identifiers)
        if total[0] > item.amount - cost:
            return False
        entries.append((self.clock(), cost))
        total[0] += cost
        self._hits += 1
        if self._hits % self.SWEEP_EVERY == 0:
            self._sweep()
        return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        entries, total, expiry = self._window(item, *identifiers)
        start = entries[0][0] if entries else self.clock()
        return WindowStats(start + expiry, item.amount - total[0])

    def _sweep(self) -> None:
        now = self.clock()
        for key in [k for k, (entries, _, expiry) in self._windows.items() if not entries or entries[-1][0] <= now - expiry]:
            del self._windows[key]


class RateLimits:
    """One storage for the guard's lifetime; the rates can be swapped by :meth:`configure` (reload)."""

    def __init__(self, cfg: LimitsConfig) -> None:
        self.storage_uri = cfg.storage
        self._inline = cfg.storage.startswith("memory")
        self._storage: Any = None
        self._limiter: Any
        if self._inline:
            self._limiter = LocalMovingWindow()
        else:
            self._storage = storage_from_string(cfg.storage, wrap_exceptions=True, **_storage_options(cfg.storage))
            self._limiter = MovingWindowRateLimiter(self._storage)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._failing = False
        self.configure(cfg)

    def configure(self, cfg: LimitsConfig) -> None:
        """Take new rates (and on_storage_error); the storage URI is fixed for the process's life."""
        if cfg.storage != self.storage_uri:
            log.warning("limits.storage changed to %s; restart the guard to switch storage (keeping %s)",
                        redact(cfg.storage), redact(self.storage_uri))
        tiers = {name: parse_many(rate) for name, rate in cfg.tiers.items()}
        self._rates = (parse_many(cfg.default), tiers, cfg.on_storage_error)

    def items(self, tier: str) -> list[RateLimitItem]:
        default, tiers, _ = self._rates
        return tiers.get(tier, default)

    @staticmethod
    def _key(principal_id: str) -> str:
        # Principal ids never reach the storage: no odd characters in Redis keys, nothing to read there.
        return hashlib.sha256(principal_id.encode()).hexdigest()[:32]

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    async def acquire(self, principal_id: str, tier: str, cost: int = 1, *, throttled: bool = False) -> LimitResult:
        """Spend ``cost`` from every window of ``tier``; with ``throttled`` also from the throttle
        windows (a tenth of each rate). Refused requests spend nothing in this process."""
        if self._inline:
            return self._acquire(principal_id, tier, max(1, cost), throttled)
        return await run_in_threadpool(self._acquire, principal_id, tier, max(1, cost), throttled)

    async def refusal(self, principal_id: str, tier: str) -> LimitResult:
        """A refusal shaped exactly like an exhausted quota, for monitoring's throttle and block
        verdicts: the same header fields, from the same windows, so the client learns nothing more."""
        if self._inline:
            return self._refusal(principal_id, tier)
        return await run_in_threadpool(self._refusal, principal_id, tier)

    def _acquire(self, principal_id: str, tier: str, cost: int, throttled: bool) -> LimitResult:
        items = self.items(tier)
        key = self._key(principal_id)
        # (window to spend from, its namespace, the quota window a refusal reports): a throttle window
        # reports the tier's own quota, so a throttled client cannot tell it from an exhausted one.
        plan = [(item, "quota", item) for item in items]
        if throttled:
            plan += [(small, "throttle", item) for small, item in zip(_scaled(items, THROTTLE_DIVISOR), items)]
        try:
            oversized = [item for item in items if cost > item.amount]
            if oversized:  # no wait would help; say so, and when a request of the largest size fits again
                item = min(oversized, key=lambda i: i.amount)
                return LimitResult(False, item.amount, 0, item.get_expiry(), _policy(items), cost=cost,
                                   largest=min(i.amount for i in items), window=item.get_expiry())
            with self._lock(key):
                for item, ns, shown in plan:
                    if not self._limiter.test(item, ns, key, cost=cost):
                        return self._refused(items, item, ns, key, shown)
                for item, ns, shown in plan:
                    if not self._limiter.hit(item, ns, key, cost=cost):
                        return self._refused(items, item, ns, key, shown)
                result = self._admitted(items, key)
        except (StorageError, OSError) as exc:
            return self._storage_failed(items, exc)
        self._recovered()
        return result

    def _refusal(self, principal_id: str, tier: str) -> LimitResult:
        items = self.items(tier)
        key = self._key(principal_id)
        try:
            stats = [(item, self._limiter.get_window_stats(item, "quota", key)) for item in items]
        except (StorageError, OSError):
            return LimitResult(False, items[0].amount, 0, 1, _policy(items))
        item, window = min(stats, key=lambda pair: pair[1].remaining)
        return LimitResult(False, item.amount, 0, self._seconds(window.reset_time), _policy(items))

    def _refused(self, items: list[RateLimitItem], item: RateLimitItem, ns: str, key: str, shown: RateLimitItem) -> LimitResult:
        window = self._limiter.get_window_stats(item, ns, key)
        return LimitResult(False, shown.amount, 0, self._seconds(window.reset_time), _policy(items))

    def _admitted(self, items: list[RateLimitItem], key: str) -> LimitResult:
        stats = [(item, self._limiter.get_window_stats(item, "quota", key)) for item in items]
        item, window = min(stats, key=lambda pair: pair[1].remaining)
        return LimitResult(True, item.amount, max(0, window.remaining), self._seconds(window.reset_time), _policy(items))

    @staticmethod
    def _seconds(reset_time: float) -> int:
        return max(1, math.ceil(reset_time - time.time()))

    def _storage_failed(self, items: list[RateLimitItem], exc: Exception) -> LimitResult:
        allow = self._rates[2] == "allow"
        if not self._failing:  # once per outage, not once per request
            cause = getattr(exc, "storage_error", exc)
            log.error("rate-limit storage %s failed (%s: %s); %s requests until it recovers",
                      redact(self.storage_uri), type(cause).__name__, redact(str(cause)), "admitting" if allow else "refusing")
            self._failing = True
        first = items[0]
        return LimitResult(allow, first.amount, 0, 1, _policy(items), storage_error=True)

    def _recovered(self) -> None:
        if self._failing:
            log.warning("rate-limit storage %s answers again", redact(self.storage_uri))
            self._failing = False

    def close(self) -> None:
        client = getattr(self._storage, "storage", None)  # the redis.Redis inside limits' RedisStorage
        if client is not None and hasattr(client, "close"):
            try:
                client.close()
            except Exception:  # closing a dead connection must not fail shutdown
                pass
