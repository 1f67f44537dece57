"""Errors raised for bad user input.

Every message is a single line that names the offending model / dataset / file / key and the fix.
The command-line entry points catch :class:`InputError` and exit with status 2.
"""


class InputError(ValueError):
    """Bad input from the user (unknown model, missing dataset files, mismatched features...)."""


#: the earlier name (kept so that code written against it keeps working)
SADAInputError = InputError
