"""How long-running work tells the user what it is doing. The library stays silent by default;
the CLI passes a rich-based implementation."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def progress(self, task: str, completed: int, total: int) -> None: ...


class Silent:
    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def progress(self, task: str, completed: int, total: int) -> None:
        pass
