"""The one exception type for user errors: the CLI turns it into one line on stderr and exit 2."""


class EdgefaultError(ValueError):
    """A user error (bad file, bad option value, unsupported model): reported without a traceback.

    Example:
        >>> raise EdgefaultError("rate must lie in [0, 1], got 2.0")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: rate must lie in [0, 1], got 2.0
    """
