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
