"""The one error type users see: a message that says what is wrong and how to fix it (the CLI prints it
as one line and exits with status 2)."""


class EditkitError(ValueError):
    """Bad input or state, with a message naming the bad value and the fix."""
