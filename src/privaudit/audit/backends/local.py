"""The default backend: reference models trained in local worker processes (joblib), one per core."""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from privaudit.audit.backends import BackendOptions, TrainingJob, register_backend
from privaudit.errors import ConfigError


class LocalBackend:
    name = "local"

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = jobs

    def run(self, job: TrainingJob, indices: Sequence[int]) -> Iterator[tuple[int, NDArray[np.float64]]]:
        from joblib import Parallel, delayed

        if not indices:
            return
        n_jobs = min(self.jobs or os.cpu_count() or 1, len(indices))
        tasks = (delayed(_indexed)(k, job.fit, job.recipe, job.X, job.y, job.masks[k], job.seeds[k], job.n_classes)
                 for k in indices)
        yield from Parallel(n_jobs=n_jobs, return_as="generator_unordered")(tasks)


@register_backend("local")
def _local(options: BackendOptions) -> LocalBackend:
    if options.address is not None:
        raise ConfigError("--ray-address: only used with --backend ray")
    if options.cpus is not None or options.gpus is not None:
        raise ConfigError("--ref-cpus/--ref-gpus reserve resources on Ray (--backend ray); "
                          "the local backend runs --jobs models at once")
    return LocalBackend(options.jobs)


def _indexed(k: int, fit: Any, *args: Any) -> tuple[int, NDArray[np.float64]]:
    return k, fit(*args)
