"""Reference models as Ray tasks: on a local Ray instance, or on an existing cluster (``--ray-address``).

The pool's rows, its labels and the training halves go into Ray's object store once, and every task
reads them from there; each task sends back one (n, C) array of scores. Tasks declare their resources
(``--ref-cpus``, ``--ref-gpus``) so Ray places them; a task that raises or whose worker dies is retried
``retries`` times, and a model that still fails stops the run with one line naming it and the worker's
error. Ray is imported only here, and only when this backend is chosen.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from privaudit.audit.backends import BackendOptions, ReferenceTrainingError, TrainingJob, register_backend
from privaudit.errors import ConfigError

RETRIES = 2  # extra attempts per model after a failure (so 3 in all)
INSTALL_HINT = 'pip install "privaudit[ray]"'


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--backend ray: Ray is not installed; install it with {INSTALL_HINT}") from None
    return ray


class RayBackend:
    name = "ray"

    def __init__(self, *, address: str | None = None, cpus: float | None = None, gpus: float | None = None,
                 jobs: int | None = None, retries: int = RETRIES) -> None:
        self.address = address
        self.cpus = 1.0 if cpus is None else cpus
        self.gpus = 0.0 if gpus is None else gpus
        self.jobs = jobs  # at most this many tasks in flight (None: let Ray schedule them all)
        self.retries = retries

    def run(self, job: TrainingJob, indices: Sequence[int]) -> Iterator[tuple[int, NDArray[np.float64]]]:
        if not indices:
            return
        ray = import_ray()
        started = self._connect(ray)
        try:
            yield from self._train(ray, job, list(indices))
        finally:
            if started:  # a Ray instance we started for this run; one the caller started stays up
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join the running Ray session, the cluster at ``address``, or start a local instance."""
        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, logging_level=logging.ERROR)
            else:
                ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"--ray-address {self.address}" if self.address else "--backend ray"
            raise ConfigError(f"{where}: cannot start or reach Ray: {_first_line(exc)}") from None
        return True

    def _train(self, ray: Any, job: TrainingJob, todo: list[int]) -> Iterator[tuple[int, NDArray[np.float64]]]:
        # One copy of the pool in the object store, shared by every task (and every node that runs one).
        X, y, masks = ray.put(job.X), ray.put(job.y), ray.put(job.masks)
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
                          retry_exceptions=True)(_train_one)
        limit = self.jobs if self.jobs and self.jobs > 0 else len(todo)
        pending: dict[Any, int] = {}
        try:
            while todo or pending:
                while todo and len(pending) < limit:
                    k = todo.pop(0)
                    ref = task.options(name=f"privaudit-reference-model-{k}").remote(
                        k, job.fit, job.recipe, X, y, masks, job.seeds[k], job.n_classes)
                    pending[ref] = k
                ready, _ = ray.wait(list(pending), num_returns=1)
                k = pending.pop(ready[0])
                try:
                    scores = ray.get(ready[0])
                except ray.exceptions.RayError as exc:
                    raise ReferenceTrainingError(
                        f"reference model {k} failed on Ray after {self.retries + 1} attempts: {_worker_error(exc)}"
                    ) from None
                yield k, np.asarray(scores, dtype=np.float64)
        finally:
            for ref in pending:  # after a failure or an interruption, do not leave the cluster busy
                ray.cancel(ref)


def _train_one(k: int, fit: Any, recipe: Any, X: NDArray[np.float64], y: NDArray[np.int64],
               masks: NDArray[np.bool_], seed: int, n_classes: int) -> NDArray[np.float64]:
    """One Ray task: reference model ``k`` (the arrays arrive from the object store, read-only)."""
    return np.asarray(fit(recipe, X, y, masks[k], seed, n_classes), dtype=np.float64)


def _worker_error(exc: BaseException) -> str:
    """The exception the worker raised, not Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    return _first_line(cause if isinstance(cause, BaseException) else exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


@register_backend("ray")
def _ray(options: BackendOptions) -> RayBackend:
    import_ray()  # a missing extra is reported before any work starts
    return RayBackend(address=options.address, cpus=options.cpus, gpus=options.gpus, jobs=options.jobs)
