"""Short remediation snippets shown with findings (kept in one place because both rules use them)."""

OPACUS_DP_SGD = """\
from opacus import PrivacyEngine
engine = PrivacyEngine()
model, optimizer, loader = engine.make_private_with_epsilon(
    module=model, optimizer=optimizer, data_loader=loader,
    target_epsilon=3.0, target_delta=1e-5, epochs=20, max_grad_norm=1.0)
# then re-audit: privaudit audit ... --claimed-epsilon 3.0 --delta 1e-5"""

LABEL_ONLY_OUTPUT = """\
# guard.yaml: answer with the top label only, no scores
hardening:
  default: {output: label}"""

PER_PRINCIPAL_LIMITS = """\
# guard.yaml: limits are counted per API key / JWT subject, never per IP
identity:
  api_keys: {file: keys.yaml}
limits:
  storage: redis://127.0.0.1:6379
  on_storage_error: deny
  default: "10/second;200/minute;5000/day"
detectors: {prada: {}, fingerprint: {}, rotation: {}, boundary: {}, volume: {}}"""

SKLEARN_LESS_MEMORISATION = """\
# scikit-learn has no DP-SGD; make the model memorise less, then re-audit
from sklearn.ensemble import RandomForestClassifier
model = RandomForestClassifier(min_samples_leaf=20, max_depth=10)  # no leaf holds a single record
# MLPClassifier(alpha=1e-2, early_stopping=True), LogisticRegression(C=0.1): stronger regularisation
# for a DP guarantee, train with a DP library for scikit-learn-style models (e.g. diffprivlib)
# and state it: privaudit audit ... --claimed-epsilon 3.0"""

# Examples that fit one model family only, by the title they are shown under. A report on a model of
# another family shows that family's example in their place; a black box (endpoint, callable) shows all.
DP_TRAINING_EXAMPLES = {"DP-SGD with Opacus": "torch", "Less memorisation in scikit-learn": "sklearn"}
FAMILY_EXAMPLES = {"sklearn": ("Less memorisation in scikit-learn", SKLEARN_LESS_MEMORISATION)}
