#!/usr/bin/env python
"""Model-inversion benchmark: privaudit's MI-Face (white box, black box, over HTTP) next to ART's MIFace.

On scikit-learn's bundled 8x8 digits, one seeded torch MLP per seed is inverted class by class by
privaudit with exact gradients, by privaudit from queries only (through the Python-callable adapter
and through a real local HTTP server, with full, rounded, top-3 and label-only answers), and by ART
1.20.1's ``MIFace`` with its defaults on a ``PyTorchClassifier`` around the same network. A
scikit-learn ``MLPClassifier`` on the same split is inverted too. One independent judge per seed
(privaudit's evaluator: an RBF SVM trained on the private training split) scores every method's
reconstructions. bench/results/inversion.md, .json and .png are written from the run.

    python bench/inversion.py            # 3 seeds, ART on probabilities and on logits (~8 min idle, 2 cores)
    python bench/inversion.py --quick    # 1 seed, ART on probabilities only (~2 min)
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LoadSampler, fmt, header, now_utc, table  # noqa: E402

from privaudit.attacks.inversion import ClassReconstruction, InversionResult, MIFaceConfig, run_inversion  # noqa: E402
from privaudit.attacks.inversion.evaluate import score, seconds_at_limit, train_evaluator  # noqa: E402
from privaudit.models import LoadOptions, as_target, load_model  # noqa: E402

BENCH = Path(__file__).resolve().parent
SHAPE = (8, 8)
LIMIT = "20/second;120/minute;20000/day"  # the stated query limit for time-to-reconstruct
BOX = (np.zeros(64), np.ones(64))  # the valid pixel range, public knowledge: every method searches it
CONFIGS = {"full": {"seeds": (0, 1, 2), "art_heads": ("probabilities", "logits")},
           "quick": {"seeds": (0,), "art_heads": ("probabilities",)}}
# Row name -> (kind, short description for the setup section). Order is the table's order.
METHODS = {
    "no attack: privaudit's start image": ("none", "every class 'reconstructed' as the uniform mid-grey start image: the "
                                           "judge's floor (it names one class for it, so 0.1)"),
    "no attack: ART's start image": ("none", "the same with ART's all-zero (blank) start image"),
    "privaudit white box": ("white-box", "`run_inversion(net, mode='white-box')`: exact torch gradients, defaults"),
    "privaudit white box, unsmoothed": ("white-box", "ablation: `MIFaceConfig(smoothing=0)`, the exact gradient at the "
                                        "point only"),
    "privaudit white box, stop at p = 0.999": ("white-box", "ablation: `MIFaceConfig(log_odds_target=6.9)`, stop once "
                                               "the neighbourhood's log-odds reach 6.9 (p = 0.999)"),
    "privaudit white box, neither": ("white-box", "ablation: both at once, close to the paper's MI-Face and to privaudit "
                                     "before this benchmark (which stopped at 1 - p < 0.001 at the point)"),
    "privaudit black box (callable adapter)": ("black-box", "`run_inversion(as_target(fn), mode='black-box')` where `fn(X)` "
                                               "returns the network's logits, as a user's `module:function` would"),
    "privaudit black box (HTTP)": ("black-box", "`load_model('http://127.0.0.1:PORT/v1/models/digits:predict')`, the "
                                   "network behind a real uvicorn server (KServe v1 JSON), full probabilities"),
    "privaudit black box (HTTP, rounded to 2 decimals)": ("black-box", "the same server answering probabilities rounded "
                                                          "to 2 decimals"),
    "privaudit black box (HTTP, top-3)": ("black-box", "the same server answering only the 3 highest probabilities"),
    "privaudit black box (HTTP, label only)": ("black-box", "the same server answering labels only: privaudit must refuse"),
    "privaudit white box, audit's box": ("white-box", "white box searching the per-pixel training range, the box "
                                         "`privaudit audit --inversion` derives (fixes never-inked pixels at 0)"),
    "privaudit black box, audit's box": ("black-box", "black box (callable adapter) in that box"),
    "ART MIFace (probabilities)": ("white-box", "`MIFace(PyTorchClassifier(nn.Sequential(net, nn.Softmax(-1)), ...))`"
                                   ".infer(None, classes)`: defaults (zero start, lr 0.1, 10,000 steps, window 100, "
                                   "threshold 0.99, batch 1); the cost 1 - p is defined on probabilities"),
    "ART MIFace (logits)": ("white-box", "the same on `PyTorchClassifier(net)`, the raw logits (ART recommends logits "
                            "outputs for its estimators; MIFace then treats a logit as p)"),
    "sklearn MLP: privaudit white box": ("white-box", "`MLPClassifier((64,), max_iter=300, random_state=s)` on the same "
                                         "split, analytic gradients"),
    "sklearn MLP: privaudit black box": ("black-box", "the same MLP through the scikit-learn adapter, queries only"),
}


# --- targets --------------------------------------------------------------------------------------


def split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    return tuple(train_test_split(d.data / 16.0, d.target, test_size=0.3, random_state=seed,  # type: ignore[return-value]
                                  stratify=d.target))


def torch_mlp(Xtr: np.ndarray, ytr: np.ndarray, seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    X, y = torch.as_tensor(Xtr, dtype=torch.float32), torch.as_tensor(ytr)
    for _ in range(300):  # full batch: memorises the training split (train accuracy 1.0)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    return net.eval()


def logits_of(net: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def fn(X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(X, dtype=torch.float32)).double().numpy()

    fn.classes = list(range(10))  # type: ignore[attr-defined]
    return fn


def sklearn_mlp(Xtr: np.ndarray, ytr: np.ndarray, seed: int) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier((64,), max_iter=300, random_state=seed).fit(Xtr, ytr)


# --- a real HTTP endpoint -------------------------------------------------------------------------


def http_app(proba: Callable[[np.ndarray], np.ndarray], rows_seen: dict[str, int]) -> Any:
    """The network behind KServe v1 routes: full, rounded, top-3 and label-only answers."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    def answer(name: str, p: np.ndarray) -> Any:
        if name == "rounded":
            return np.round(p, 2).tolist()
        if name == "top3":
            best = np.argsort(-p, axis=1)[:, :3]
            return [{str(j): float(p[i, j]) for j in best[i]} for i in range(len(p))]
        if name == "labels":
            return [str(j) for j in p.argmax(1)]
        return p.tolist()

    def route(name: str) -> Route:
        async def predict(request: Request) -> Response:
            rows = np.asarray((await request.json())["instances"], dtype=np.float64)
            rows_seen[name] = rows_seen.get(name, 0) + len(rows)
            return JSONResponse({"predictions": answer(name, proba(rows))})

        return Route(f"/v1/models/{name}:predict", predict, methods=["POST"])

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/health", health), *(route(n) for n in ("digits", "rounded", "top3", "labels"))])


class Server:
    """uvicorn on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app: Any) -> None:
        import socket
        import threading

        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's HTTP server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


# --- ART ------------------------------------------------------------------------------------------


def run_art(net: Any, head: str) -> tuple[np.ndarray, int, float]:
    """ART's MIFace with its defaults; counts every record it sends through class_gradient and predict."""
    import torch
    from art.attacks.inference.model_inversion import MIFace
    from art.estimators.classification import PyTorchClassifier

    model = torch.nn.Sequential(net, torch.nn.Softmax(dim=-1)) if head == "probabilities" else net
    clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(64,), nb_classes=10,
                            clip_values=(0.0, 1.0))
    count = [0]
    gradient, predict = clf.class_gradient, clf.predict

    def counted_gradient(x: np.ndarray, label: Any = None, **kw: Any) -> np.ndarray:
        count[0] += len(x)
        return gradient(x, label=label, **kw)

    def counted_predict(x: np.ndarray, **kw: Any) -> np.ndarray:
        count[0] += len(x)
        return predict(x, **kw)

    clf.class_gradient, clf.predict = counted_gradient, counted_predict  # type: ignore[method-assign]
    t0 = time.perf_counter()
    recon = MIFace(clf, verbose=False).infer(None, np.arange(10))  # verbose only draws a progress bar
    return np.asarray(recon, dtype=np.float64).reshape(10, 64), count[0], time.perf_counter() - t0


def as_result(recon: np.ndarray, queries: int, seconds: float) -> InversionResult:
    # ART reports no per-class counts or confidences; only the total is measured.
    recs = tuple(ClassReconstruction(str(c), c, recon[c], float("nan"), float("nan"), 0, 0, "art", True)
                 for c in range(10))
    return InversionResult("white-box", None, recs, queries, seconds)


# --- one seed -------------------------------------------------------------------------------------


def measure(result: InversionResult, seconds: float, judge: Any, data: tuple[np.ndarray, ...], kind: str,
            start: np.ndarray, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    Xtr, Xho, ytr, yho = data
    out: dict[str, Any] = {"mode": result.mode, "kind": kind, "seconds": seconds, "queries": int(result.queries_total),
                           "reason": result.reason, **(extra or {})}
    out["seconds_at_limit"] = seconds_at_limit(result.queries_total, LIMIT) if kind == "black-box" else None
    if result.mode == "refused":
        out.update(accuracy=None, top5=None, classes=[])
        return out
    s = score(result, judge, Xtr, ytr, Xho, yho, image_shape=SHAPE)
    out.update(accuracy=s.attack_accuracy, top5=s.attack_accuracy_top5,
               closer_than_holdout=float(np.mean([c.closer_than_holdout for c in s.classes])),
               distance_ratio=float(np.mean([c.nearest_train_distance / c.holdout_reference_distance
                                             for c in s.classes])),
               nearest_train_distance=float(np.mean([c.nearest_train_distance for c in s.classes])),
               holdout_reference_distance=float(np.mean([c.holdout_reference_distance for c in s.classes])),
               output_mode=None if result.output_mode is None else result.output_mode.to_dict(),
               # reconstructions no pixel of which moved by 1 % of the range from the method's start image
               unmoved=int(np.sum(np.max(np.abs(result.reconstructions - start), axis=1) < 0.01)),
               classes=[{"class": c.class_label, "evaluator_prediction": s.classes[i].evaluator_prediction,
                         "evaluator_confidence": s.classes[i].evaluator_confidence, "queries": int(c.queries),
                         "target_probability": None if not np.isfinite(c.probability) else float(c.probability),
                         "stop_reason": c.stop_reason} for i, c in enumerate(result.classes)],
               reconstructions=result.reconstructions.tolist())
    return out


def timed(fn: Callable[[], InversionResult]) -> tuple[InversionResult, float]:
    t0 = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t0


def run_seed(seed: int, art_heads: tuple[str, ...]) -> dict[str, Any]:
    import torch

    Xtr, Xho, ytr, yho = data = split(seed)
    net = torch_mlp(Xtr, ytr, seed)
    fn = logits_of(net)
    acc = {"train": float(np.mean(fn(Xtr).argmax(1) == ytr)), "holdout": float(np.mean(fn(Xho).argmax(1) == yho))}
    # One judge per seed for every row: an RBF SVM (another family than the MLP targets) on the
    # private training split, scaled by the box the main comparison searches.
    judge = train_evaluator(Xtr, ytr, target_family="neural", seed=seed, bounds=BOX)
    audit_box = (Xtr.min(axis=0), Xtr.max(axis=0))
    common = {"n_classes": 10, "n_features": 64, "image_shape": SHAPE, "seed": seed}
    methods: dict[str, Any] = {}

    def add(name: str, fn_: Callable[[], InversionResult], **extra: Any) -> None:
        r, secs = timed(fn_)
        start = np.zeros(64) if "ART" in name else audit_box[0] + 0.5 * (audit_box[1] - audit_box[0]) \
            if "audit's box" in name else np.full(64, 0.5)
        methods[name] = measure(r, secs, judge, data, METHODS[name][0], start, extra)
        m = methods[name]
        print(f"  {name:52s} acc {fmt(m['accuracy'], 2):>5s}  queries {m['queries']:>7d}  {secs:6.1f} s", flush=True)

    for name, value in (("no attack: privaudit's start image", 0.5), ("no attack: ART's start image", 0.0)):
        add(name, lambda: as_result(np.full((10, 64), value), 0, 0.0))
    add("privaudit white box", lambda: run_inversion(net, bounds=BOX, mode="white-box", **common))
    for name, cfg in (("privaudit white box, unsmoothed", MIFaceConfig(smoothing=0.0)),
                      ("privaudit white box, stop at p = 0.999", MIFaceConfig(log_odds_target=6.9)),
                      ("privaudit white box, neither", MIFaceConfig(smoothing=0.0, log_odds_target=6.9))):
        add(name, lambda: run_inversion(net, bounds=BOX, mode="white-box", config=cfg, **common))
    add("privaudit black box (callable adapter)", lambda: run_inversion(as_target(fn), bounds=BOX, mode="black-box", **common))
    proba = lambda X: torch.softmax(torch.as_tensor(fn(X)), -1).numpy()  # noqa: E731
    seen: dict[str, int] = {}
    with Server(http_app(proba, seen)) as server:
        for route, name in (("digits", "privaudit black box (HTTP)"),
                            ("rounded", "privaudit black box (HTTP, rounded to 2 decimals)"),
                            ("top3", "privaudit black box (HTTP, top-3)"),
                            ("labels", "privaudit black box (HTTP, label only)")):
            loaded = load_model(f"{server.base}/v1/models/{route}:predict", LoadOptions(http={"classes": list(range(10))}))
            try:
                add(name, lambda: run_inversion(loaded, bounds=BOX, mode="black-box", **common))
            finally:
                loaded.target.close()  # type: ignore[attr-defined]
            methods[name]["server_rows"] = seen.get(route, 0)  # what the server actually received
    add("privaudit white box, audit's box", lambda: run_inversion(net, bounds=audit_box, mode="white-box", **common))
    add("privaudit black box, audit's box", lambda: run_inversion(as_target(fn), bounds=audit_box, mode="black-box",
                                                                  **common))
    for head in art_heads:
        recon, queries, secs = run_art(net, head)
        name = f"ART MIFace ({head})"
        add(name, lambda: as_result(recon, queries, secs))
        methods[name]["seconds"] = secs  # the attack's own time, not the wrapping
        print(f"  {'':52s} (ART attack time {secs:.1f} s)", flush=True)
    mlp = sklearn_mlp(Xtr, ytr, seed)
    acc_sk = {"train": float(mlp.score(Xtr, ytr)), "holdout": float(mlp.score(Xho, yho))}
    add("sklearn MLP: privaudit white box", lambda: run_inversion(mlp, bounds=BOX, mode="white-box", **common))
    add("sklearn MLP: privaudit black box", lambda: run_inversion(mlp, bounds=BOX, mode="black-box", **common))
    means = [Xtr[ytr == c].mean(axis=0).tolist() for c in range(10)]
    return {"seed": seed, "torch_accuracy": acc, "sklearn_accuracy": acc_sk, "methods": methods, "class_means": means}


# --- report ---------------------------------------------------------------------------------------


def mean_sd(values: list[float | None], digits: int = 2) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "n/a"
    return fmt(float(np.mean(v)), digits) + (f" ± {fmt(float(np.std(v, ddof=1)), digits)}" if len(v) > 1 else "")


def duration(seconds: float | None, kind: str) -> str:
    if seconds is None:
        return "n/a (white box: needs the weights, not the API)" if kind == "white-box" else "n/a"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def acc_mean(runs: list[dict[str, Any]], name: str) -> float | None:
    v = [r["methods"][name]["accuracy"] for r in runs if name in r["methods"]]
    return None if not v or any(x is None for x in v) else float(np.mean(v))


def bars(runs: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    arts = [n for n in METHODS if n.startswith("ART") and n in runs[0]["methods"]]
    out = []
    for name in ("privaudit black box (callable adapter)", "privaudit black box (HTTP)") if arts else ():
        best_art = max(arts, key=lambda n: acc_mean(runs, n) or 0.0)
        ours, theirs = acc_mean(runs, name), acc_mean(runs, best_art)
        per_seed = sum(r["methods"][name]["accuracy"] >= r["methods"][best_art]["accuracy"] for r in runs)
        out.append((f"{name} accuracy >= ART's best white-box accuracy ({best_art})", bool(ours >= theirs),
                    f"{fmt(ours, 2)} vs {fmt(theirs, 2)} (mean over seeds); held on {per_seed} of {len(runs)} seeds"))
    for name, label in (("privaudit white box", "privaudit white-box accuracy >= 0.8 (torch MLP)"),
                        ("sklearn MLP: privaudit white box", "scikit-learn MLP invertible white box: accuracy >= 0.8 "
                                                             "(chance is 0.1)")):
        v = [r["methods"][name]["accuracy"] for r in runs]
        out.append((label, bool(np.mean(v) >= 0.8), f"mean {fmt(float(np.mean(v)), 2)}, lowest seed {fmt(min(v), 2)}"))
    return out


def misreads(runs: list[dict[str, Any]], name: str) -> str:
    parts = []
    for r in runs:
        m = r["methods"].get(name)
        if m is None or m["accuracy"] is None:
            continue
        wrong = [f"{c['class']}→{c['evaluator_prediction']}" for c in m["classes"] if c["class"] != c["evaluator_prediction"]]
        parts.append(f"seed {r['seed']}: " + (", ".join(wrong) if wrong else "all named right"))
    return "; ".join(parts) if parts else "n/a"


def notes(runs: list[dict[str, Any]]) -> list[str]:
    """Reading aids, each computed from the run."""
    out = ["## Reading the numbers", "",
           f"- One reconstruction per class and seed: one misread class moves a seed's accuracy by 0.1 and the "
           f"mean over {len(runs)} seed{'s' if len(runs) > 1 else ''} by {0.1 / len(runs):.3f}; differences of that size are one image.",
           "- Attack accuracy is what the judge recognises. The picture at the end shows what a person would see; "
           "on these 8x8 digits the two differ (see below)."]
    grey = sorted({c["evaluator_prediction"] for r in runs for c in r["methods"]["no attack: privaudit's start image"]["classes"]})
    blank = sorted({c["evaluator_prediction"] for r in runs for c in r["methods"]["no attack: ART's start image"]["classes"]})
    out.append(f"- The judge names privaudit's grey start image as class {' or '.join(grey)} and ART's blank start "
               f"image as class {' or '.join(blank)} (depending on the seed), so a method that leaves that class at "
               "its start image still scores it; the *stayed at the start image* column below counts such cases.")
    rounded = [r["methods"].get("privaudit black box (HTTP, rounded to 2 decimals)") for r in runs]
    if all(m is not None for m in rounded):
        stuck = sum(m["unmoved"] for m in rounded)
        zero = sum(c["target_probability"] == 0.0 for m in rounded for c in m["classes"])
        out.append(f"- Rounded to 2 decimals: {stuck} of {10 * len(runs)} reconstructions never left the start image "
                   f"and {zero} end with the class still answered as 0.00. The likely reason: rounding hides every "
                   "class but those the network gives at least 0.005, and a class answered 0.00 all around the "
                   "start point gives the queries nothing to follow. Rounding is a real defence against this attack.")
    for head in ("probabilities", "logits"):
        name = f"ART MIFace ({head})"
        if name in runs[0]["methods"]:
            q = [r["methods"][name]["queries"] for r in runs]
            span = f"{min(q) // 2:,}" if min(q) == max(q) else f"{min(q) // 2:,} to {max(q) // 2:,}"
            out.append(f"- {name} made {span} gradient steps in total over the 10 classes on each seed "
                       "(each step is one `class_gradient` and one `predict` record; at most 10,000 steps per class).")
    out.append("")
    return out


def figure(path: Path, run: dict[str, Any], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("training-class mean (private)", run["class_means"], None)]
    rows += [(n, run["methods"][n]["reconstructions"], [c["evaluator_prediction"] for c in run["methods"][n]["classes"]])
             for n in names if run["methods"].get(n, {}).get("accuracy") is not None]
    fig, axes = plt.subplots(len(rows), 10, figsize=(10, 1.15 * len(rows)))
    for i, (name, images, preds) in enumerate(rows):
        for c in range(10):
            ax = axes[i, c]
            ax.imshow(np.asarray(images[c]).reshape(SHAPE), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if preds is not None:
                ax.set_title(f"judge: {preds[c]}", fontsize=6, color="black" if preds[c] == str(c) else "red")
        axes[i, 0].set_ylabel(name.replace(": ", ":\n").replace(" (", "\n("), fontsize=5, rotation=0, ha="right",
                              va="center")
    fig.suptitle(f"Reconstructions of classes 0-9, seed {run['seed']} (red: the judge names another class)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, runs: list[dict[str, Any]], cfg: dict[str, Any], started: str, wall: float, load: str,
                 quick: bool) -> None:
    title = "Model inversion on digits: privaudit's MI-Face vs ART's MIFace" + (" (quick run)" if quick else "")
    lines = header(title, cfg["seeds"], started, wall, ("art", "torch"), load)
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines += ["## Setup", "",
              "- Data: `sklearn.datasets.load_digits()` (1,797 8×8 images, pixels divided by 16 into [0, 1]), split "
              "`train_test_split(test_size=0.3, stratify=y, random_state=s)`: 1,257 private training images, 540 holdout.",
              "- Target: torch MLP 64-64-10 (ReLU), `torch.manual_seed(s)`, Adam lr 0.01, 300 full-batch epochs on "
              "the training split; it answers logits. Accuracy train "
              + mean_sd([r["torch_accuracy"]["train"] for r in runs], 3) + ", holdout "
              + mean_sd([r["torch_accuracy"]["holdout"] for r in runs], 3) + ". Second target: scikit-learn "
              "`MLPClassifier((64,), max_iter=300, random_state=s)` on the same split, accuracy train "
              + mean_sd([r["sklearn_accuracy"]["train"] for r in runs], 3) + ", holdout "
              + mean_sd([r["sklearn_accuracy"]["holdout"] for r in runs], 3) + ".",
              "- Attacker's box: the valid pixel range [0, 1] for every method (ART: `clip_values=(0, 1)`), except "
              "the two rows marked *audit's box*.",
              "- Judge (the same for every row of a seed): `privaudit.attacks.inversion.evaluate.train_evaluator("
              "X_train, y_train, target_family='neural', seed=s, bounds=(0, 1))`, an RBF SVM with calibrated "
              "probabilities, a different family from both MLP targets, trained on the private training split. "
              "Attack accuracy = share of the 10 reconstructions (one per class) it assigns to the attacked class "
              "(top-1); chance is 0.1.",
              "- Queries: records sent to the model (black box; the HTTP rows also record what the server received) "
              "or model evaluations (white box: one per gradient, for ART also one per `predict` of its stopping "
              "test). Seconds: wall time of the attack alone, one thread (`torch.set_num_threads(1)`, BLAS limited "
              "to 1 thread).",
              f"- Time at the limit: `privaudit.attacks.inversion.evaluate.seconds_at_limit(queries, '{LIMIT}')`, "
              "the earliest moment the last record of all 10 classes can be sent through those moving-window limits "
              "(per principal, as the guard enforces them), ignoring latency; black-box rows only.",
              "- privaudit's MI-Face runs with its defaults (`MIFaceConfig()`, 3,000 queries per class at most, start "
              "at the middle of the box, total-variation prior for 8×8 images). ART's MIFace runs with all its "
              "defaults; `verbose=False` only hides its progress bar.",
              "- Mean ± sample standard deviation over the seeds; per-seed, per-class numbers and every "
              "reconstruction are in the JSON file.", "", "Rows:", ""]
    lines += [f"- **{n}**: {d}" for n, (_, d) in METHODS.items() if n in runs[0]["methods"]]
    lines += ["", "## Bars", ""]
    lines += table(["bar", "result", "measured"], [[b, "**HOLDS**" if ok else "**FAILS**", m] for b, ok, m in bars(runs)])
    lines += notes(runs)
    lines += ["## Results", ""]
    rows = []
    for name in METHODS:
        ms = [r["methods"][name] for r in runs if name in r["methods"]]
        if not ms:
            continue
        if ms[0]["mode"] == "refused":
            rows.append([name, "refused", "n/a", "n/a", mean_sd([m["seconds"] for m in ms], 2),
                         str(int(np.mean([m["queries"] for m in ms]))), "n/a", "n/a", "n/a", "n/a"])
            continue
        rows.append([name, "—" if ms[0]["kind"] == "none" else ms[0]["mode"], mean_sd([m["accuracy"] for m in ms]) + " (" + " / ".join(fmt(m["accuracy"], 1) for m in ms) + ")",
                     mean_sd([m["top5"] for m in ms]), mean_sd([m["seconds"] for m in ms], 2),
                     f"{int(np.mean([m['queries'] for m in ms])):,}",
                     duration(None if ms[0]["seconds_at_limit"] is None else float(np.mean([m["seconds_at_limit"] for m in ms])),
                              ms[0]["kind"]),
                     "n/a" if ms[0]["seconds_at_limit"] is None else
                     duration(float(np.mean([seconds_at_limit(c["queries"], LIMIT) for m in ms for c in m["classes"]])),
                              ms[0]["kind"]),
                     mean_sd([m["distance_ratio"] for m in ms]), mean_sd([m["closer_than_holdout"] for m in ms])])
    lines += table(["method", "mode", f"attack accuracy (seeds {seeds})", "top-5", "seconds", "queries (10 classes)",
                    f"time at {LIMIT}: all 10 classes", "one class", "distance to training / holdout yardstick",
                    "closer than holdout"], rows)
    lines += ["*one class*: the mean over classes of the time that class's own queries take at the limit (an "
              "attacker after one person's class needs only those); the 8 probe records are left out.", ""]
    lines += ["*distance to training / holdout yardstick*: Euclidean distance (pixel space) from a class's "
              "reconstruction to the nearest training image of that class, divided by the yardstick, the median "
              "distance from a holdout image of the class to its nearest training image; mean over classes. "
              "*closer than holdout*: share of classes where that ratio is below 1, i.e. the reconstruction is "
              "nearer to some real training image than an unseen image of the class is.", ""]
    refused = [r["methods"].get("privaudit black box (HTTP, label only)") for r in runs]
    if refused and refused[0] is not None:
        lines += [f"Label-only endpoint: mode `{refused[0]['mode']}`, reason: \"{refused[0]['reason']}\" "
                  f"({refused[0]['queries']} probe records sent).", ""]
    lines += ["## Which classes the judge misread", ""]
    lines += table(["method", "misread (class→judge's answer)"],
                   [[n, misreads(runs, n)] for n in METHODS if n in runs[0]["methods"]
                    and runs[0]["methods"][n]["mode"] != "refused"])
    lines += ["## How the descents ended", "",
              "Per method, over all seeds and classes: privaudit's stop reasons (converged = the whole neighbourhood "
              "reached the target log-odds; plateau = no progress for 40 steps; flat = the answers never changed; "
              "budget = 3,000 queries spent) and, for every method, how many reconstructions stayed at the start "
              "image (no pixel moved by 1 % of the range).", ""]
    rows = []
    for name in METHODS:
        ms = [r["methods"][name] for r in runs if name in r["methods"]]
        if not ms or ms[0]["mode"] == "refused" or METHODS[name][0] == "none":
            continue
        reasons = Counter(c["stop_reason"] for m in ms for c in m["classes"])
        told = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) if "art" not in reasons else "n/a (ART)"
        rows.append([name, told, f"{sum(m['unmoved'] for m in ms)} of {10 * len(ms)}"])
    lines += table(["method", "stop reasons", "stayed at the start image"], rows)
    lines += ["## HTTP query accounting", ""]
    lines += table(["row", "queries counted by privaudit", "records received by the server"],
                   [[f"{n}, seed {r['seed']}", r["methods"][n]["queries"], r["methods"][n]["server_rows"]]
                    for r in runs for n in METHODS if "server_rows" in r["methods"].get(n, {})])
    lines += ["## Reconstructions", "", f"![reconstructions, seed {runs[0]['seed']}]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(lines) + "\n")
    figure(path.with_suffix(".png"), runs[0], [n for n in METHODS if n in runs[0]["methods"] and METHODS[n][0] != "none"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, ART on probabilities only")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds")
    p.add_argument("--no-art", action="store_true", help="privaudit rows only (no ART, no bars); for development")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--report-from", type=Path, default=None, metavar="JSON",
                   help="rewrite the markdown and picture from a JSON file an earlier run wrote (no measuring)")
    args = p.parse_args(argv)
    if args.report_from is not None:
        saved = json.loads(args.report_from.read_text())
        meta = saved["meta"]
        sys.argv = meta["argv"]  # the header names the command that measured, not this one
        write_report(args.report_from.with_suffix(".md"), saved["runs"], saved["config"], meta["started"],
                     saved["wall_seconds"], meta["load"], meta["quick"])
        print(f"wrote {args.report_from.with_suffix('.md')}")
        return 0
    cfg = dict(CONFIGS["quick" if args.quick else "full"])
    if args.seeds:
        cfg["seeds"] = tuple(args.seeds)
    if args.no_art:
        cfg["art_heads"] = ()
    out = args.out or BENCH / "results" / ("inversion-quick.md" if args.quick else "inversion.md")
    out.parent.mkdir(parents=True, exist_ok=True)

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # small networks: on two shared cores, threads cost more than they give
    started, t0 = now_utc(), time.perf_counter()
    runs = []
    with LoadSampler() as sampler, threadpool_limits(limits=1):
        for seed in cfg["seeds"]:
            print(f"seed {seed} ...", flush=True)
            runs.append(run_seed(seed, cfg["art_heads"]))
    wall = time.perf_counter() - t0
    write_report(out, runs, cfg, started, wall, sampler.summary(), args.quick)
    meta = {"argv": ["bench/inversion.py", *(argv if argv is not None else sys.argv[1:])], "started": started,
            "load": sampler.summary(), "quick": args.quick}
    out.with_suffix(".json").write_text(json.dumps({"config": {**cfg, "seeds": list(cfg["seeds"]), "limit": LIMIT},
                                                    "meta": meta, "runs": runs, "wall_seconds": wall,
                                                    "bars": [{"bar": b, "holds": ok, "measured": m}
                                                             for b, ok, m in bars(runs)]}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
