"""The one exception type for user errors, and the wording of OS errors: the CLI turns both into one line and exit 2."""

import errno


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
