"""LOSS / confidence-threshold attack (Yeom et al. 2018): members get lower loss.

A population attack: no reference models. The signal is the scaled logit of the true class, which
ranks like the cross-entropy loss but keeps resolution near p = 1. On label-only outputs it falls
back to the gap attack (correct = member).
"""

from __future__ import annotations

from privaudit.attacks.membership import ALL_KINDS, AttackContext, AttackResult, register_attack
from privaudit.attacks.membership.signals import correctness, scaled_logit


@register_attack("loss", kinds=ALL_KINDS, summary="population threshold on the true-class scaled logit")
def run(ctx: AttackContext) -> AttackResult:
    if ctx.target_probs is None:
        return AttackResult("loss", correctness(ctx.target_outputs, ctx.y), params={"signal": "correctness"})
    return AttackResult("loss", scaled_logit(ctx.target_probs, ctx.y, ctx.floor), params={"signal": "scaled_logit"})
