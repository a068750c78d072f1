"""The explorer: Optuna searches the design space (`space`) under a compute budget. Its layers, from
the bottom up: base, trial, studies, scaleout, search and analysis, commands (README "How the code is
laid out"; the contracts in pyproject.toml)."""
