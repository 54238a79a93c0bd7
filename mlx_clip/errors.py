"""Errors shared by the library and its command-line tools."""


class InputError(ValueError):
    """Bad user input; its message is one line naming the file, the record or line, and the field."""
