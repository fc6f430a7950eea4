"""The one exception type for user errors and the wording of its messages: the CLI turns them into one line and exit 2."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Iterator


class EdgefaultError(ValueError):
    """A user error (bad file, bad option value, unsupported model): reported without a traceback.

    Example:
        >>> raise EdgefaultError("rate must lie in [0, 1], got 2.0")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: rate must lie in [0, 1], got 2.0
    """


# What a failed write or read means to the user, by errno; anything else keeps the system's wording.
_OS_ERROR_HINTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (over the file size limit)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def os_error_line(exc: OSError) -> str:
    """The one-line message for an OS error: the file involved and what went wrong.

    Example:
        >>> os_error_line(OSError(errno.ENOSPC, "No space left on device", "runs/a/model.pt"))
        'runs/a/model.pt: no space left on the device'
    """
    what = _OS_ERROR_HINTS.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__).lower()
    if exc.filename is None:
        return what
    also = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{exc.filename}{also}: {what}"


def error_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line user errors.

    Example:
        >>> error_line(ValueError("bad\\nmore"))
        'bad'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unsupported_input(name: str, what: str) -> EdgefaultError:
    """The one message for an input type edgefault cannot feed, shared by every command.

    Example:
        >>> str(unsupported_input("x", "string"))
        "model input 'x' is of type string; edgefault feeds float, uint8 or int8 tensors"
    """
    return EdgefaultError(f"model input {name!r} is of type {what}; edgefault feeds float, uint8 or int8 tensors")


@contextlib.contextmanager
def about_model(path: str | os.PathLike) -> Iterator[None]:
    """Prefix the user errors raised inside with the model's path (once), as every command reports them.

    Example:
        >>> with about_model("m.onnx"):
        ...     raise EdgefaultError("model input 'x' has rank 5")
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: m.onnx: model input 'x' has rank 5
        >>> class Folded(EdgefaultError): pass
        >>> try:
        ...     with about_model("m.onnx"):
        ...         raise Folded("folded batch")
        ... except Folded as caught:
        ...     print(caught)
        m.onnx: folded batch
    """
    try:
        yield
    except EdgefaultError as exc:
        message = str(exc)
        if not message.startswith(str(path)):
            exc.args = (f"{path}: {message}",)  # the same error, so a caller can still catch its subclass
        raise
