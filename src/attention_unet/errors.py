"""The one exception type the CLI turns into a one-line message and exit code 2."""


class InputError(ValueError):
    """Bad user input (a file, folder or option); the message names the file and the problem."""
