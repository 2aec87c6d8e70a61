"""User-facing errors. The CLI prints each as one line and exits with its ``exit_code``."""

from __future__ import annotations


class PrivauditError(Exception):
    """A problem with the user's input or environment that the user can fix.

    The message must say what was wrong and how to fix it, naming the file, column or rows.
    """

    exit_code: int = 2


class DataError(PrivauditError):
    """A data file or array cannot be used as given."""


class ModelLoadError(PrivauditError):
    """A model file cannot be loaded (unreadable, unsafe, untrusted types)."""


class UnsupportedModelError(PrivauditError):
    """The model is not a classifier privaudit can audit (e.g. a regressor)."""


class EndpointError(PrivauditError):
    """An HTTP endpoint could not be queried or answered in an unexpected shape."""


class QueryBudgetExceeded(EndpointError):
    """The audit would need more queries than ``--max-queries`` allows."""


class ConfigError(PrivauditError):
    """A command-line option or configuration value is invalid."""


class NothingAuditable(PrivauditError):
    """No attack could run on this target (exit code 3)."""

    exit_code = 3
