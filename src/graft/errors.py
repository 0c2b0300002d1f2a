"""Exceptions graft raises for problems a user can fix (bad input, bad options).

The CLI prints these as one-line messages without a traceback; anything else is a bug.
"""


class GraftError(Exception):
    """A problem with the user's input or options, explained in the message.

    The base of every error graft raises on purpose: catch it to handle them all. Its
    message is one line that names the file or option and what is wrong.
    """


class DataError(GraftError):
    """A dataset folder or image that graft cannot use (missing, empty, one class, nothing
    readable, an unknown class name); the message names the folder or file."""


class ImageDecodeError(DataError):
    """One image file that cannot be decoded (:func:`graft.data.decode.load_image`).

    Parameters
    ----------
    path : str or os.PathLike
        The file (or the name an upload was given).
    reason : str
        Why, in words: "not a supported image format (...)", "truncated", "too many pixels", ...

    Attributes
    ----------
    path : str
    reason : str
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelError(GraftError):
    """A model artifact or backbone that cannot be built or loaded: an unknown backbone name, a
    folder without ``model/graft.json``, weights that do not fit the architecture."""
