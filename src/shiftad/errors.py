"""Errors that carry a message meant for the user: what is wrong, where, and how to fix it."""


class ShiftadError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ParamsError(ShiftadError):
    """params.yaml (or an override file) is invalid; the message names the key."""


class DataError(ShiftadError):
    """An input file or folder is invalid; the message names the file and the fix."""
