"""The one error type users see: a single clear line naming the file, record and field."""


class InputError(ValueError):
    """Bad input from the user: its message is one line that says what and where."""
