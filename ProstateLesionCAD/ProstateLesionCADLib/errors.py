"""Errors caused by the user's input.

Every message is one sentence naming the file, series or parameter and what is wrong;
the CLI prints it without a traceback and exits non-zero, the Slicer panels show it in
an error dialog.
"""


class CadError(Exception):
    """Base class of all user-facing errors (bad input, bad model, bad parameters)."""


class CaseError(CadError):
    """A study, series or image file cannot be used (missing T2, missing slice, bad geometry...)."""


class ModelError(CadError):
    """A model package is missing, corrupt, fails its checksum or does not fit the case."""


class FormatError(CadError):
    """A JSON/CSV exchange file is malformed or has an unknown format version."""


class ParameterError(CadError):
    """A command-line or panel parameter is out of range."""
