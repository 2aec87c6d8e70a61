"""Report model and writers. Writers render a :class:`Report`; they never see attack internals."""

from privaudit.report.schema import Report

__all__ = ["Report"]
