"""Reference-model training on the local backend and on Ray: wall time, Ray's cost per task, speed-up.

For K = 4, 8, 16 reference models of an MLP (~1 s each on one core) on Purchase-like data, times
``train_reference_models`` with no cache on the local backend (joblib processes) and on a local Ray
instance, each with 1 and 2 workers, on this one machine. Also measures: one model trained in this
process (the per-model cost), a Ray task that does no work (Ray's own cost per task), Ray's start-up,
and checks that both backends return identical scores. Writes bench/results/scale.md (+ .json).

    python bench/scale.py            # ~5-10 min on 2 busy cores
    python bench/scale.py --quick    # K = 2, 4 only -> bench/results/scale-quick.md
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, now_utc, table  # noqa: E402

from privaudit import datasets  # noqa: E402
from privaudit.audit.backends import BackendOptions, make_backend  # noqa: E402
from privaudit.audit.reference import (ScoreCache, fit_and_score, in_masks, model_seed, recipe_from_estimator,  # noqa: E402
                                 train_reference_models)

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 0


def no_work(recipe: Any, X: np.ndarray, y: np.ndarray, mask: np.ndarray, seed: int, n_classes: int) -> np.ndarray:
    """A 'model' that trains nothing and returns uniform scores: what is left is the backend's own cost."""
    return np.full((len(y), n_classes), 1.0 / n_classes)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def problem() -> tuple[Any, np.ndarray, np.ndarray, int]:
    from sklearn.neural_network import MLPClassifier

    s = datasets.purchase_like(2000, n_features=200, n_classes=20, flip=0.3, seed=SEED)
    X, y = np.vstack([s.X_train, s.X_holdout]), np.r_[s.y_train, s.y_holdout].astype(np.int64)
    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=SEED)
    return recipe_from_estimator(mlp, target_fingerprint="bench-scale", feature_names=None), X, y, 20


def timed(recipe: Any, X: np.ndarray, y: np.ndarray, n_classes: int, k: int, backend: Any) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    refs = train_reference_models(recipe, X, y, n_classes, k, seed=SEED, cache=ScoreCache(None), backend=backend)
    return time.perf_counter() - start, refs.probabilities


def one_model(recipe: Any, X: np.ndarray, y: np.ndarray, mask: np.ndarray, seed: int, n_classes: int) -> tuple[float, float]:
    """Wall and CPU seconds of one model, measured in the process that trains it."""
    wall, cpu = time.perf_counter(), time.process_time()
    fit_and_score(recipe, X, y, mask, seed, n_classes)
    return time.perf_counter() - wall, time.process_time() - cpu


def per_model_cost(recipe: Any, X: np.ndarray, y: np.ndarray, n_classes: int, repeats: int,
                   where: str) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per model, trained in this process, in joblib workers or in Ray tasks."""
    masks = in_masks(y, repeats, SEED)
    args = [(recipe, X, y, masks[k], model_seed(SEED, k), n_classes) for k in range(repeats)]
    if where == "ray":
        import ray

        task = ray.remote(num_cpus=1)(one_model)
        return [ray.get(task.remote(*a)) for a in args]  # one at a time, like the in-process runs
    if where == "joblib":
        from joblib import Parallel, delayed

        return list(Parallel(n_jobs=2)(delayed(one_model)(*a) for a in args))
    return [one_model(*a) for a in args]


def ray_noop_cost(X: np.ndarray, y: np.ndarray, n_classes: int, n_tasks: int) -> float:
    """Seconds per task for tasks that do nothing, one at a time on one worker (after a warm-up)."""
    backend = make_backend("ray", BackendOptions(jobs=1))
    from privaudit.audit.backends import TrainingJob

    masks = in_masks(y, n_tasks, SEED)
    job = TrainingJob(no_work, None, X, y, masks, tuple(range(n_tasks)), n_classes)
    list(backend.run(job, [0]))  # warm-up: a worker process and the function's export
    start = time.perf_counter()
    done = list(backend.run(job, list(range(n_tasks))))
    assert len(done) == n_tasks
    return (time.perf_counter() - start) / n_tasks


def grid(recipe: Any, X: np.ndarray, y: np.ndarray, n_classes: int, ks: tuple[int, ...], workers: int, name: str,
         backend: Any, runs: dict[tuple[str, int, int], list[float]], scores: dict[tuple[str, int, int], np.ndarray]) -> None:
    timed(recipe, X, y, n_classes, workers, backend)  # warm-up: the backend starts its worker processes
    for k in ks:
        seconds, scores[name, workers, k] = timed(recipe, X, y, n_classes, k, backend)
        runs.setdefault((name, workers, k), []).append(seconds)
        print(f"{name:6} workers={workers} K={k}: {seconds:.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the whole grid; the tables show their median")
    args = parser.parse_args()
    import ray

    ks = (2, 4) if args.quick else (4, 8, 16)
    started, t0 = now_utc(), time.perf_counter()
    load_start = load()
    recipe, X, y, n_classes = problem()
    repeats = 3 if args.quick else 5
    cost = {"this process": per_model_cost(recipe, X, y, n_classes, repeats, "here"),
            "joblib workers (2 at once)": per_model_cost(recipe, X, y, n_classes, repeats, "joblib")}
    serial = [wall for wall, _ in cost["this process"]]
    t_model = statistics.median(serial)
    runs: dict[tuple[str, int, int], list[float]] = {}
    scores: dict[tuple[str, int, int], np.ndarray] = {}
    startup: dict[int, list[float]] = {1: [], 2: []}
    noop: dict[int, float] = {}
    for rep in range(args.repeats):
        # Alternate which backend goes first, so a drift in the machine's load does not favour one of them.
        for workers in (1, 2):
            for name in (("local", "ray") if rep % 2 == 0 else ("ray", "local")):
                if name == "local":
                    grid(recipe, X, y, n_classes, ks, workers, "local", make_backend("local", BackendOptions(jobs=workers)),
                         runs, scores)
                    continue
                start = time.perf_counter()
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
                startup[workers].append(time.perf_counter() - start)
                try:
                    grid(recipe, X, y, n_classes, ks, workers, "ray", make_backend("ray", BackendOptions()), runs, scores)
                    if rep == 0:
                        noop[workers] = ray_noop_cost(X, y, n_classes, 16 if args.quick else 32)
                        if workers == 1:
                            cost["a Ray task (1 at a time)"] = per_model_cost(recipe, X, y, n_classes, repeats, "ray")
                finally:
                    ray.shutdown()
    identical = all(np.array_equal(scores[key], scores["local", 1, key[2]]) for key in scores)
    wall = time.perf_counter() - t0
    rows = {key: statistics.median(v) for key, v in runs.items()}
    write(args.quick, ks, started, wall, load_start, load(), serial, t_model, rows, runs, startup, noop, identical, X, cost)


def write(quick: bool, ks: tuple[int, ...], started: str, wall: float, load_start: str, load_end: str,
          serial: list[float], t_model: float, rows: dict[tuple[str, int, int], float],
          runs: dict[tuple[str, int, int], list[float]], startup: dict[int, list[float]],
          noop: dict[int, float], identical: bool, X: np.ndarray, cost: dict[str, list[tuple[float, float]]]) -> None:
    name = "scale-quick" if quick else "scale"
    lines = header("Reference-model training: local processes and Ray", [SEED], started, wall, ("ray", "joblib"),
                   load=f"load average (1, 5, 15 min) at the start: {load_start}; at the end: {load_end} "
                        "(the machine's 2 cores are shared with other jobs, so every time here is inflated "
                        "and noisy; ratios measured in the same minutes are the more telling numbers)")
    lines += ["## Setup", "",
              f"- Pool: `datasets.purchase_like(2000, n_features=200, n_classes=20, flip=0.3, seed={SEED})`, train and "
              f"holdout stacked: {X.shape[0]} records x {X.shape[1]} features ({X.nbytes / 2**20:.1f} MiB as float64).",
              "- Recipe: `MLPClassifier(hidden_layer_sizes=(64,), max_iter=200)` cloned per model "
              "(`recipe_from_estimator`); each model trains on its half and scores the whole pool, on one BLAS thread.",
              "- Timed: `train_reference_models(..., cache=ScoreCache(None), backend=...)`, wall clock, after one "
              "warm-up call per backend and worker count (so worker processes already exist: that start-up is "
              "reported apart). Local: joblib with `jobs` = workers. Ray: a local instance started with "
              "`ray.init(num_cpus=workers)`, one CPU per task.",
              f"- Per-model wall time: one model trained in this process, {len(serial)} times: "
              + ", ".join(f"{s:.2f}" for s in serial) + f" s; median **{t_model:.2f} s**.",
              f"- Same numbers: the scores of every Ray run equal the local 1-worker run's bit for bit: "
              f"**{'yes' if identical else 'NO'}**.", ""]
    head = ["K", "local, 1 worker (s)", "local, 2 workers (s)", "Ray, 1 worker (s)", "Ray, 2 workers (s)",
            "speed-up local 1→2", "speed-up Ray 1→2", "Ray vs local, 2 workers"]
    body = []
    for k in ks:
        l1, l2, r1, r2 = rows["local", 1, k], rows["local", 2, k], rows["ray", 1, k], rows["ray", 2, k]
        cells = [f"{rows[key]:.2f} ({min(runs[key]):.2f}-{max(runs[key]):.2f})"
                 for key in (("local", 1, k), ("local", 2, k), ("ray", 1, k), ("ray", 2, k))]
        body.append([k, *cells, f"{l1 / l2:.2f}x", f"{r1 / r2:.2f}x", f"{r2 / l2:.2f}x the time"])
    n_runs = len(next(iter(runs.values())))
    lines += ["## Training time", "",
              f"Median of {n_runs} runs of the whole grid (min-max in brackets); ratios are between medians.", ""]
    lines += table(head, body)
    lines += ["Speed-up is the 1-worker time over the 2-worker time on the same backend. On two dedicated cores it "
              "would approach 2x for models this long; here two workers share the two cores with the other jobs "
              "behind the load average above, so a second worker mostly competes for the same CPU share, and each "
              "single run can be off by tens of per cent (see the ranges).", "", per_run_speedups(runs, ks), ""]
    lines += ["## Why wall times on this machine mislead", "",
              "Wall and CPU seconds of one model, measured inside the process that trains it (median of "
              f"{len(serial)} models, min-max in brackets):", ""]
    lines += table(["trained in", "wall (s)", "CPU (s)"],
                   [[where, f"{statistics.median(w for w, _ in v):.2f} ({min(w for w, _ in v):.2f}-{max(w for w, _ in v):.2f})",
                     f"{statistics.median(c for _, c in v):.2f} ({min(c for _, c in v):.2f}-{max(c for _, c in v):.2f})"]
                    for where, v in cost.items()])
    lines += ["A model costs about the same CPU time wherever it runs; its wall time is that CPU time stretched by however "
              "much of a core the process gets on a machine running many other jobs on its 2 cores (see the load "
              "above). The differences between the backends' wall times in the table above are mostly that share, "
              "not work either backend does or saves; the CPU seconds per model are the number to project from.", ""]
    per_task = {w: [(rows["ray", w, k] - rows["local", w, k]) / k for k in ks] for w in (1, 2)}
    lines += ["## Ray's cost per task", "",
              f"- A task that trains nothing (returns uniform scores for the {X.shape[0]} records), run one at a time "
              f"on a warm worker: **{noop[1] * 1000:.0f} ms** per task with 1 worker, {noop[2] * 1000:.0f} ms with 2 "
              "(submit, schedule, read the pool from the object store, send the scores back, `ray.wait`).",
              "- Ray minus local, per model, same K and workers: "
              + "; ".join(f"{w} worker{'s' if w > 1 else ''}: " + ", ".join(f"K={k} {d:+.3f} s" for k, d in zip(ks, per_task[w]))
                          for w in (1, 2)) + " (noise on this loaded machine is of the same order).",
              f"- Starting a local Ray instance (`ray.init`): median {statistics.median(startup[1]):.1f} s (1 CPU), "
              f"{statistics.median(startup[2]):.1f} s (2 CPUs), over {len(startup[1])} starts each; "
              "paid once per audit when privaudit starts Ray itself, not when it joins a running cluster.", ""]
    cpu_model = statistics.median(c for _, c in cost["this process"])
    lines += projection(cpu_model, noop[1], X)
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines))
    (RESULTS / f"{name}.json").write_text(json.dumps({
        "load_start": load_start, "load_end": load_end, "per_model_seconds": serial, "per_model_wall_cpu": cost, "identical": identical,
        "startup_seconds": startup, "noop_task_seconds": noop,
        "times": [{"backend": b, "workers": w, "k": k, "seconds": s} for (b, w, k), s in runs.items()]}, indent=2))
    print(f"wrote {path}")


def per_run_speedups(runs: dict[tuple[str, int, int], list[float]], ks: tuple[int, ...]) -> str:
    """1→2-worker speed-up within each run of the grid (1 and 2 workers of one backend ran minutes apart)."""
    parts = []
    for name in ("local", "ray"):
        per_k = [", ".join(f"{a / b:.2f}x" for a, b in zip(runs[name, 1, k], runs[name, 2, k])) for k in ks]
        parts.append(f"{name}: " + "; ".join(f"K={k} {v}" for k, v in zip(ks, per_k)))
    return ("Speed-up 1→2 workers within each run, in run order: " + " — ".join(parts)
            + ". A run near 2x shows what a second core gives when it is free.")


def projection(t_model: float, overhead: float, X: np.ndarray) -> list[str]:
    cores = 8
    head = ["nodes (8 cores each)", "models at once", "rounds of models", "projected time for K = 64"]
    body = []
    for nodes in (1, 2, 4, 8):
        slots = nodes * cores
        rounds = math.ceil(64 / slots)
        body.append([nodes, slots, rounds, f"{rounds * (t_model + overhead):.1f} s"])
    lines = ["## Projection: K = 64 on a cluster", "",
             f"A projection from the two costs measured above, not a measurement: each model costs "
             f"{t_model:.2f} s of CPU on one core here (its CPU time, not its wall time on this loaded machine) plus {overhead * 1000:.0f} ms of Ray per task; a node with c cores runs c "
             f"models at once (`--ref-cpus 1`), so K models on N nodes take about ceil(K / (N c)) x "
             f"({t_model:.2f} s + {overhead:.2f} s), plus a one-off transfer of the pool to each node "
             f"({X.nbytes / 2**20:.1f} MiB here) and of each model's scores back to the driver "
             f"({X.shape[0]} x 20 float64 = {X.shape[0] * 20 * 8 / 2**10:.0f} KiB per model). On one 2-core machine like this "
             f"one, K = 64 is 32 rounds, about {32 * (t_model + overhead):.0f} s; with 8-core nodes:", ""]
    lines += table(head, body)
    share = overhead / (t_model + overhead)
    lines += [f"Data for K = 64: the pool once to each node that runs a task ({X.nbytes / 2**20:.1f} MiB), and "
              f"{64 * X.shape[0] * 20 * 8 / 2**20:.0f} MiB of scores back in all. The projection assumes cores as fast "
              "as these and no other load. Ray's measured cost per task is "
              f"{100 * share:.1f} % of a model here, so the speed-up is set by the number of cores that run models "
              "at once, not by Ray; for models that take minutes it is smaller still. Past K / c nodes more nodes "
              "cannot help: every model is already running, and the slowest model sets the time.", ""]
    return lines


if __name__ == "__main__":
    main()
