"""The layer map: which module sits on which floor. An import may go to its own floor or a lower one,
never up, and no import chain may come back to where it started (tests/test_layers.py checks every import
statement in src/, those inside functions included).

A run is data flowing one way: cli -> executors -> session (ledger, parts) -> stages -> models -> data -> base.
"""

from __future__ import annotations

# Lowest floor first. A name covers the module and, for a package, everything under it; the longest
# matching name wins (so `backends.preset` can sit below the rest of `backends`).
FLOORS: list[tuple[str, list[str]]] = [
    (
        "base",
        [
            "vidcap",
            "errors",
            "console",
            "clihelp",
            "parallel",
            "rows",
            "summary",
            "knobs",
            "gpus",
            "config",
            "procs",
            "faults",
        ],
    ),
    ("data", ["storage", "dataset", "manifest", "rowcells", "tables", "table_ops", "frames", "export_media", "cut"]),
    (
        "models",
        [
            "backends",
            "engine",
            "motion",
            "scenes",
            "prompts",
            "schemas",
            "checks",
            "heal",
            "neardup",
            "tags.parse",
            "dev.tokenizer",
            "dev.tiny_pllava",
        ],
    ),
    ("stages", ["stages"]),
    ("session", ["session", "ledger", "ledger_plan", "parts", "feeder"]),
    ("executors", ["runners", "runner"]),
    (
        "app",
        [
            "cli",
            "__main__",
            "report",
            "bench",
            "export",
            "export_ranges",
            "join",
            "budget",
            "preflight",
            "tags",
            "dev",
            "layers",
        ],
    ),
]


def floor_of(module: str) -> int:
    """The floor of a dotted module name (`vidcap.x.y` or `x.y`); KeyError for one the map does not place."""
    name = module.removeprefix("vidcap.") if module != "vidcap" else "vidcap"
    best, depth = None, -1
    for level, (_, names) in enumerate(FLOORS):
        for n in names:
            if (name == n or name.startswith(n + ".")) and n.count(".") > depth:
                best, depth = level, n.count(".")
    if best is None:
        raise KeyError(f"vidcap.{name} is on no floor of vidcap.layers.FLOORS; add it where it belongs")
    return best
