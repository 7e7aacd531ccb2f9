"""`vidcap report`: registered on the main typer app by `register(app)`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        output: Path = typer.Argument(..., help="A vidcap output table (caption, motion, tag, or merged)."),
        html: Path | None = typer.Option(
            None, "-o", "--output", help="The HTML file (default <output stem>_report.html)."
        ),
        sample: int = typer.Option(
            200, "--sample", help="Rows shown (0 = all); errors and flagged rows are picked first."
        ),
        filter: str | None = typer.Option(
            None,
            "--filter",
            help="KEY=VALUE: flag=repetition, error=decode, error=any, cmotion=pan_left, objects=dog, status=failed.",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the row sample."),
        workers: int | None = typer.Option(
            None, "--workers", help="Thumbnail processes (default: CPU count, at most 8; 0 = in-process)."
        ),
        root: Path | None = typer.Option(
            None, "--root", help="Folder that relative paths in the table are under (default: the output's folder)."
        ),
    ):
        """Write a self-contained HTML page to review an output: summary charts and a card per sampled clip."""
        from .build import build_report

        if not output.exists():  # a table file, or a dataset folder (read_table refuses an unfinished one)
            from ..errors import UsageError

            raise UsageError(f"{output} does not exist; pass the output table of a vidcap run.")
        stats = build_report(output, html, sample=sample, filter=filter, seed=seed, workers=workers, root=root)
        typer.echo(
            f"wrote {stats['html']}: {stats['shown']} of {stats['matched']} rows "
            f"({stats['errors_shown']} failed, {stats['flagged_shown']} flagged), "
            f"{stats['thumbnails']} thumbnails, {stats['bytes'] / 1e6:.2f} MB in {stats['seconds']:.1f} s"
        )
