"""privaudit: can someone learn who was in your training data, from your model or its API?

The public API is what this module exports; everything else may change between releases.
"""

from __future__ import annotations

__version__ = "0.1.0"

from privaudit.audit import audit
from privaudit.data import load_data
from privaudit.models import load_model
from privaudit.report.schema import Report

__all__ = ["Report", "__version__", "audit", "load_data", "load_model"]
