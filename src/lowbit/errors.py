"""The one exception type users see: a problem with their input, and how to fix it."""


class UsageError(Exception):
    """Bad input: the CLI prints the message on one line and exits non-zero, writing nothing."""
