"""The inference guard: a reverse proxy (and ASGI middleware) in front of a model endpoint that
identifies principals, enforces per-principal limits, hardens outputs, logs queries as fingerprints
and watches for systematic probing."""
