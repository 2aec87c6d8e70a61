"""The audit's stages, in the order ``privaudit.audit.audit`` runs them.

Each module holds one stage: a function from typed inputs (frozen dataclasses) to a typed output.

1. load.py        data, then the model; every check at the edge          -> Inputs
2. query.py       one query per record; output mode; accuracies          -> Answers
3. references.py  which attacks can run; reference models (a backend)   -> Plan, References
4. attacks.py     attacks, split check, what-if variants (cached)        -> AttackRun
5. membership.py  the held-out verdict, records at risk, DP claim        -> Membership
6. sections.py    what-if table, model inversion, attribute inference    -> Sections
7. assemble.py    provenance and the Report, then the rules' findings    -> Report

Writers and the gate come after, shared with ``scan`` and ``monitor`` (privaudit.ci.conclude).
"""
