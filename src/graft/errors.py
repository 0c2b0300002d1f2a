"""Exceptions graft raises for problems a user can fix (bad input, bad options).

The CLI prints these as one-line messages without a traceback; anything else is a bug.
"""


class GraftError(Exception):
    """A problem with the user's input or options, explained in the message."""


class DataError(GraftError):
    """A dataset folder or image that graft cannot use."""


class ImageDecodeError(DataError):
    """One image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelError(GraftError):
    """A model artifact or backbone that cannot be built or loaded."""
