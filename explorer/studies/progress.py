"""The live view of a running search (rich): where it is, how it's doing, how long is left."""
from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from ..base.budget import format_cost, format_flops
from .record import cost_at
from .rungs import rung_of


class SearchProgress:
    """`objective`: the study's second objective; the best trial is the most accurate, then the cheapest on it."""

    def __init__(self, target: int, done: int, rejected: int, console: Console | None = None,
                 objective: str = "flops"):
        self.target, self.done, self.objective = target, done, objective
        self.rejected_count, self.failed_count = rejected, 0
        self.best: tuple[float, float, int] | None = None  # accuracy, cost on the objective, trial
        self.current = "waiting for the first trial"
        self.epoch_text = ""
        self.trial_started = time.perf_counter()
        self.durations: list[float] = []
        self.bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[eta]}"), console=console)
        self.task = self.bar.add_task("trials", total=target, completed=done, eta="")
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.update(self._render())
        result = self.live.__exit__(*exc)
        if not self.live.console.is_terminal:  # rich ends the last frame without a newline off a terminal
            self.live.console.line()
        return result

    def _render(self):
        lines = [self.bar, Text(f"  {self.current}{self.epoch_text}")]
        status = f"  rejected draws: {self.rejected_count}   failed trials: {self.failed_count}"
        if self.best:
            acc, cost, number = self.best
            status += (f"   best accuracy on the front: {acc:.3f} at {format_cost(self.objective, cost)} "
                       f"(trial {number})")
        lines.append(Text(status, style="dim"))
        return Group(*lines)

    def _refresh(self):
        remaining = max(0, self.target - self.done)
        eta = ""
        if self.durations and remaining:
            eta = f"ETA {int(sum(self.durations) / len(self.durations) * remaining)}s"
        self.bar.update(self.task, completed=self.done, eta=eta)
        self.live.update(self._render())

    # hooks called by the objective -------------------------------------------------
    def start_trial(self, number: int, family: str, flops: int) -> None:
        self.trial_started = time.perf_counter()
        self.current = f"trial {number}: {family}, {format_flops(flops)} (multiply-adds)"
        self.epoch_text = ""
        self._refresh()

    def epoch(self, epoch: int, epochs: int, accuracy: float) -> None:
        self.epoch_text = f", epoch {epoch}/{epochs}, val accuracy {accuracy:.3f}"
        self._refresh()

    def rejected(self) -> None:
        self.rejected_count += 1

    def failed(self, reason: str) -> None:
        self.failed_count += 1
        self.current = f"{self.current}: failed ({reason})"
        self._refresh()

    def trial_done(self, study, trial) -> None:
        """An Optuna callback: runs after every trial, whatever its state."""
        if trial.values is None:
            return
        if not rung_of(trial):  # a promotion trains a counted genotype again
            self.durations.append(time.perf_counter() - self.trial_started)
            self.done += 1
        accuracy, cost = trial.values[0], cost_at(trial, self.objective)
        if cost is not None and (self.best is None or (accuracy, -cost) > (self.best[0], -self.best[1])):
            self.best = (accuracy, cost, trial.number)
        self._refresh()

    # hooks for several workers (explorer.commands.pool) ----------------------------------
    def waiting(self, held: list[int]) -> None:
        """Every remaining slot is held by a trial running in another worker."""
        self.current = (f"waiting: trial{'s' if len(held) > 1 else ''} {', '.join(map(str, held))} "
                        "running in other workers")
        self.epoch_text = ""
        self._refresh()

    def sync(self, target: int, done: int, rejected: int, failed: int, best, current: str) -> None:
        """The whole study's state, polled from its storage by the parent of `--jobs N` workers."""
        if not hasattr(self, "_synced_from"):
            self._synced_from = (time.perf_counter(), done)
        started, done_at_start = self._synced_from
        self.target, self.done, self.rejected_count, self.failed_count = target, done, rejected, failed
        self.best, self.current, self.epoch_text = best, current, ""
        self.bar.update(self.task, total=target)
        if done > done_at_start and done < target:
            per_trial = (time.perf_counter() - started) / (done - done_at_start)
            self.durations = [per_trial]
        self._refresh()
