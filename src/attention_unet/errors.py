"""The one exception type the CLI turns into a one-line message and exit code 2."""

from pathlib import Path


class InputError(ValueError):
    """Bad user input (a file, folder or option); the message names the file and the problem.
    ``parameter``: the library parameter the message starts with (``tile``), which the command
    line shows as its flag (``--tile``)."""

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


def unreadable(name: str | Path, exc: BaseException, source: bytes | str | Path | None = None) -> InputError:
    """One line for a file that a decoder could not read. An empty file says so; imageio's wrappers
    ("An unknown error occurred while initializing plugin `pillow`") give way to Pillow's reason
    ("Truncated File Read")."""
    source = name if source is None else source
    empty = not source if isinstance(source, bytes) else Path(source).is_file() and Path(source).stat().st_size == 0
    if empty:
        return InputError(f"{name}: cannot read image (the file is empty: 0 bytes)")
    while exc.__cause__ is not None and "`pillow`" in str(exc):
        exc = exc.__cause__
    return InputError(f"{name}: cannot read image ({type(exc).__name__}: {exc})")
