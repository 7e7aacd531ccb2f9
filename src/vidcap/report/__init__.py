"""The HTML review page: `build_report(output, html)` (CLI: `vidcap report`)."""

from vidcap.report.build import DEFAULT_SAMPLE, build_report, default_html

__all__ = ["build_report", "default_html", "DEFAULT_SAMPLE"]
