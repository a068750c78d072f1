"""The explorer: Optuna searches the design space (`space`) under a compute budget. Its layers, from
the bottom up: base, trial, studies, scaleout, sweep and analysis, commands (README "How the code is
laid out"; the contracts in pyproject.toml).

From Python: `explorer.search(...)`, `explorer.open_study(name)`, `explorer.report(...)` and
`explorer.fidelity(...)` (explorer.commands.api), loaded on first use (PEP 562) so that importing
`explorer.base` or running `explore --help` never loads torch. (The layer that runs a search's trials is
`explorer.sweep`, pycls's word for it, so that `explorer.search` is only ever the function.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["search", "open_study", "report", "fidelity", "Result"]

if TYPE_CHECKING:
    from .analysis.results import Result
    from .commands.api import fidelity, open_study, report, search


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'explorer' has no attribute {name!r}")
    from .analysis import results
    from .commands import api
    globals().update(Result=results.Result, **{n: getattr(api, n) for n in __all__ if n != "Result"})
    return globals()[name]

