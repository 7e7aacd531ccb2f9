"""The HTML review page: `build_report(output, html)` (CLI: `vidcap report`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidcap.report.build import DEFAULT_SAMPLE, build_report, default_html

__all__ = ["build_report", "default_html", "DEFAULT_SAMPLE"]


def __getattr__(name: str):
    """The page builder (pandas) loads on first use: `vidcap.cli` registers `vidcap report` from
    `vidcap.report.cli`, and a run command's startup should not import pandas for it."""
    if name in __all__:
        from vidcap.report import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
