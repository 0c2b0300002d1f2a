"""What the commands print: a run's summary (the text comes from graft.reporting.summary)."""
from __future__ import annotations

import click


def print_summary(directory, metrics: dict, scored_on: str = "validation") -> None:
    from graft.reporting.summary import run_summary

    click.echo(run_summary(directory, metrics, scored_on))


def print_result(result) -> None:
    """A training recipe's result; nothing on a non-zero rank under torchrun (rank 0 reports)."""
    from graft.reporting.summary import training_summary

    if result.metrics:
        click.echo(training_summary(result.run_dir, result.metrics))
