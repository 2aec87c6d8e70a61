"""capture_encryption: captured requests are encrypted with a customer-managed key.

Captured inputs are copies of the queries, often personal data. FAIL when SageMaker data capture
or Vertex request logging runs without a KMS key of the customer's (AWS-owned keys cannot be
audited or revoked). UNKNOWN when nothing is captured (nothing to encrypt) or the sink is not
visible (a KServe/Seldon logger URL, an Azure data collector).
"""

from __future__ import annotations

from privaudit.findings import CheckStatus
from privaudit.rules.deployment import ControlOutcome
from privaudit.scan.checks import CheckMeta, Context, outcome, register_check
from privaudit.scan.graph import Deployment

META = CheckMeta(
    key="capture_encryption", title="Captured inference data is encrypted with a customer-managed key",
    reads="SageMaker DataCaptureConfig.KmsKeyId; Vertex encryption_spec.kms_key_name",
    aws_operations=("DescribeEndpoint", "DescribeEndpointConfig"),
)


@register_check(META)
def run(dep: Deployment, ctx: Context) -> list[ControlOutcome]:
    ep = dep.endpoint
    if ep.kind == "sagemaker_endpoint" and dep.configs:
        cfg = dep.configs[0]
        cap = cfg.props.get("capture")
        if cap and cap.get("enabled") is not False:
            if cap.get("kms_key"):
                return [outcome(META, CheckStatus.PASS, f"endpoint config {cfg.name} encrypts captured data with KMS key "
                                                        f"{cap['kms_key']}", [cfg])]
            return [outcome(META, CheckStatus.FAIL, f"endpoint config {cfg.name} captures data without a KmsKeyId: it is "
                                                    "encrypted only with an AWS-managed key", [cfg])]
    if ep.kind == "vertex_endpoint" and ep.props.get("logging"):
        if ep.props.get("kms_key"):
            return [outcome(META, CheckStatus.PASS, f"Vertex endpoint {ep.name} uses CMEK {ep.props['kms_key']}", [ep])]
        return [outcome(META, CheckStatus.FAIL, f"Vertex endpoint {ep.name} logs requests without a customer key "
                                                "(encryption_spec)", [ep])]
    return [outcome(META, CheckStatus.UNKNOWN, f"no captured data of {ep.name} whose encryption the scan can see", [ep],
                    needs="turn on capture with a customer-managed KMS key, or check the logger's sink by hand")]
