"""PyTorch targets: one small MLP audited in memory, as TorchScript, as torch.export and as ONNX."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import privaudit
from privaudit import datasets
from privaudit.errors import ModelLoadError
from privaudit.models import LoadOptions, ModelOptions, as_target, load_model

N_FEATURES, N_CLASSES = 20, 4
FAST = {"reference_models": 2, "jobs": 1, "cache_dir": False, "what_if": False, "n_bootstrap": 20}


def _data() -> Any:
    return datasets.purchase_like(400, n_features=N_FEATURES, n_classes=N_CLASSES, flip=0.3, seed=3)


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, N_CLASSES))


def mlp_trainer(X: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    """A --trainer returning an nn.Module: the recipe the target below was trained with."""
    torch.manual_seed(seed)
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    Xt, yt = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The overfit MLP and its TorchScript, torch.export (dynamic and fixed batch) and ONNX files."""
    s = _data()
    model = mlp_trainer(s.X_train, s.y_train, seed=0)
    d = tmp_path_factory.mktemp("torch")
    example = torch.as_tensor(s.X_train[:4], dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript and the TorchScript-based ONNX exporter are deprecated
        torch.jit.script(model).save(str(d / "mlp.pt"))
        torch.onnx.export(model, (example,), str(d / "mlp.onnx"), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}}, dynamo=False)
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(d / "mlp.pt2"))
    torch.export.save(torch.export.export(model, (example,)), str(d / "fixed.pt2"))
    return {"model": model, "split": s, "dir": d}


def test_every_format_gives_the_in_memory_outputs(saved: dict[str, Any]) -> None:
    s, d = saved["split"], saved["dir"]
    X = np.vstack([s.X_train, s.X_holdout])
    with torch.no_grad():
        expected = saved["model"](torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    for name, fmt in (("mlp.pt", "torchscript"), ("mlp.pt2", "torch-export"), ("fixed.pt2", "torch-export"),
                      ("mlp.onnx", "onnx")):
        loaded = load_model(str(d / name))
        assert loaded.format == fmt
        out = loaded.target.predict(X[:397])  # not a multiple of the fixed export batch (4)
        np.testing.assert_allclose(out, expected[:397], atol=1e-5, rtol=0)
        assert loaded.target.queries == 397


def test_same_recipe_gives_the_same_attack_numbers_in_every_format(saved: dict[str, Any]) -> None:
    s, d = saved["split"], saved["dir"]
    data = dict(train=(s.X_train, s.y_train), holdout=(s.X_holdout, s.y_holdout))
    opts = {"ref_epochs": 8, "ref_batch_size": 64}
    # The built-in loop trains the same architecture whether the module came from memory or a file.
    loop = {name: privaudit.audit(m, **data, **FAST, model_options=opts)
            for name, m in (("memory", saved["model"]), ("script", d / "mlp.pt"), ("export", d / "mlp.pt2"))}
    # A trainer makes ONNX (otherwise a surrogate) comparable too; it returns an nn.Module.
    trained = {name: privaudit.audit(m, **data, **FAST, trainer="test_models_torch:mlp_trainer")
               for name, m in (("memory", saved["model"]), ("onnx", d / "mlp.onnx"))}
    for reports in (loop, trained):
        first = next(iter(reports.values()))
        assert first.membership.best is not None
        for report in reports.values():
            for a, b in zip(first.membership.attacks, report.membership.attacks):
                assert a.name == b.name
                assert a.auc == pytest.approx(b.auc, abs=1e-4)
                assert a.tpr_at_fpr == pytest.approx(b.tpr_at_fpr, abs=1e-4)
    assert loop["script"].membership.reference_recipe.startswith("built-in torch loop: same TorchScript module")
    assert "trainer test_models_torch:mlp_trainer" == trained["onnx"].membership.reference_recipe
    # The target memorised its noisy training half: the audit must see it.
    assert loop["memory"].membership.attacks[0].auc > 0.6
    assert trained["onnx"].membership.attacks[0].auc > 0.6


def test_reruns_are_identical_and_onnx_without_trainer_warns_about_the_surrogate(saved: dict[str, Any]) -> None:
    s, d = saved["split"], saved["dir"]
    data = dict(train=(s.X_train, s.y_train), holdout=(s.X_holdout, s.y_holdout))
    a, b = (privaudit.audit(d / "mlp.pt", **data, **FAST, model_options={"ref_epochs": 3}) for _ in range(2))
    assert [x.auc for x in a.membership.attacks] == [x.auc for x in b.membership.attacks]
    onnx = privaudit.audit(d / "mlp.onnx", **data, **FAST)
    assert onnx.membership.reference_recipe.startswith("default surrogate")
    assert any("surrogate" in w and "weaker" in w for w in onnx.warnings)
    assert not any("surrogate" in w for w in a.warnings)


def test_reference_loop_stops_early_on_its_held_out_records(saved: dict[str, Any]) -> None:
    from privaudit.models.torch_reference import TorchFitter

    s = saved["split"]
    X, y = np.vstack([s.X_train, s.X_holdout]), np.r_[s.y_train, s.y_holdout]
    mask = np.zeros(len(y), bool)
    mask[: len(y) // 2] = True
    fitter = TorchFitter.of(saved["model"], fmt="torch", archive=None, device="cpu", fingerprint=None,
                            options=ModelOptions(ref_epochs=200, ref_lr=1e-2, ref_batch_size=32, ref_patience=2))
    probs = fitter.fit_score(X, y, mask, seed=1, n_classes=N_CLASSES)
    again = fitter.fit_score(X, y, mask, seed=1, n_classes=N_CLASSES)
    np.testing.assert_array_equal(probs, again)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # Re-initialised, then trained: it fits its own half far better than chance but is not the target.
    acc_in = float(np.mean(probs[mask].argmax(1) == y[mask]))
    assert acc_in > 0.6
    with torch.no_grad():
        target = saved["model"](torch.as_tensor(X, dtype=torch.float32)).softmax(-1).double().numpy()
    assert np.abs(probs - target).max() > 0.1


def test_torch_save_pickle_is_refused_without_allow_pickle(saved: dict[str, Any], run: Any, tmp_path: Path,
                                                           plain_terminal: None) -> None:
    s = saved["split"]
    path = tmp_path / "pickled.pt"
    torch.save(saved["model"], path)
    np.savez(tmp_path / "train.npz", X=s.X_train, y=s.y_train)
    np.savez(tmp_path / "holdout.npz", X=s.X_holdout, y=s.y_holdout)
    args = ["audit", "-m", path, "--train", tmp_path / "train.npz", "--holdout", tmp_path / "holdout.npz",
            "--no-cache", "-k", "2", "--jobs", "1", "--ref-epochs", "2", "--fail-on", "never"]
    refused = run(*args)
    assert refused.code == 2
    assert "refusing to unpickle" in refused.err and "--allow-pickle" in refused.err
    assert "Traceback" not in refused.err and len(refused.err.strip().splitlines()) <= 3
    allowed = run(*args, "--allow-pickle", "-o", tmp_path / "r.json")
    assert allowed.code == 0, allowed.err
    assert '"format": "torch-pickle"' in (tmp_path / "r.json").read_text()
    with pytest.raises(ModelLoadError, match="state_dict"):
        torch.save(saved["model"].state_dict(), tmp_path / "weights.pt")
        load_model(str(tmp_path / "weights.pt"), LoadOptions(allow_pickle=True))


def test_white_box_inversion_works_on_scripted_and_exported_modules(saved: dict[str, Any]) -> None:
    from privaudit.attacks.inversion import run_inversion

    d = saved["dir"]
    results = {}
    for name, model in (("memory", as_target(saved["model"])), ("script", load_model(str(d / "mlp.pt"))),
                        ("export", load_model(str(d / "mlp.pt2")))):
        results[name] = run_inversion(model, n_classes=N_CLASSES, n_features=N_FEATURES, bounds=(0.0, 1.0),
                                      classes_to_invert=[0, 1], max_queries_per_class=200, seed=0)
    for r in results.values():
        assert r.mode == "white-box"
    base = [c.x for c in results["memory"].classes]
    for name in ("script", "export"):
        for a, b in zip(base, (c.x for c in results[name].classes)):
            np.testing.assert_allclose(a, b, atol=1e-4)
    # The reconstruction of a class is recognised as that class by the model it was extracted from.
    with torch.no_grad():
        probs = saved["model"](torch.as_tensor(np.stack(base), dtype=torch.float32)).softmax(-1).numpy()
    assert list(probs.argmax(1)) == [0, 1]


def test_frozen_torchscript_has_nothing_to_train_so_the_surrogate_is_used_and_named(saved: dict[str, Any],
                                                                                      tmp_path: Path) -> None:
    s = saved["split"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.freeze(torch.jit.script(saved["model"].eval())).save(str(tmp_path / "frozen.pt"))
    loaded = load_model(str(tmp_path / "frozen.pt"))
    assert not loaded.fitter.trainable()
    X = np.vstack([s.X_train, s.X_holdout])
    with torch.no_grad():
        expected = saved["model"](torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(loaded.target.predict(X), expected, atol=1e-5)
    report = privaudit.audit(tmp_path / "frozen.pt", (s.X_train, s.y_train), (s.X_holdout, s.y_holdout), **FAST,
                             attacks=["rmia_offline"])
    assert report.membership.reference_recipe.startswith("default surrogate")
    assert any("--trainer" in w for w in report.warnings)
