"""``graft resume RUN``: continue whichever training command made the run, from its last
finished epoch, with its saved settings (Lightning's ``ckpt_path="last"``, for a run folder)."""
from __future__ import annotations

from graft.errors import GraftError
from graft.recipes._run import FitResult, is_resumable, read_saved
from graft.recipes.registry import recipe, resumable_commands

__all__ = ["interrupted_hint", "is_resumable", "resume", "resumable_commands"]


def resume(run_dir, *, given: dict | None = None, strict: bool = False, progress: bool = True) -> FitResult:
    """Continue a killed or interrupted training run from its last finished epoch.

    Any training command's run (``finetune``, ``pretrain``, ``adapt``, ``distill``,
    ``multitask``) continues the way it started: the saved settings are read back (older runs'
    through the settings versions) and the recipe that wrote the run continues it.

    Parameters
    ----------
    run_dir : str or pathlib.Path
        The run folder (it holds ``checkpoints/last.pt``).
    given : dict, optional
        Settings the user repeated (on the command line); any that differs from the saved one
        is an error listing them all.
    strict : bool, default False
        Stop at the first unreadable image instead of skipping it with a warning.
    progress : bool, default True
        Show progress bars on stderr.

    Returns
    -------
    FitResult
        The run folder and its final metrics, as the uninterrupted run would have written.

    Raises
    ------
    GraftError
        The folder is no training run, is finished, has no finished epoch, a repeated setting
        differs, or its data changed since it started.
    """
    run, config = read_saved(run_dir)
    saved_command = config.get("command")
    if saved_command not in resumable_commands():  # the registry's recipes with a resume
        raise GraftError(f"cannot resume: {run.path} was not written by graft {', '.join(resumable_commands())}")
    return recipe(saved_command).continue_run(run, config, given=given or {}, strict=strict, progress=progress)


def interrupted_hint(run_dir) -> str:
    """What to tell a user whose training run in ``run_dir`` was interrupted (Ctrl-C)."""
    if run_dir and is_resumable(run_dir):
        return f"interrupted: every finished epoch is saved; continue with `graft resume {run_dir}`"
    return "interrupted before the first epoch finished: nothing to resume; run the same command again to start over"
