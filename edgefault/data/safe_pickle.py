"""A restricted unpickler for dataset batches (CIFAR) that may come from anywhere.

A pickle can call any importable function while it loads; this one admits only what
numpy needs to rebuild arrays, besides the built-in lists, dicts, strings and numbers.
"""

from __future__ import annotations

import io
import pickle

from edgefault.errors import EdgefaultError

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes: pure data
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except numpy's array reconstruction.

    Example:
        >>> import pickle, io
        >>> RestrictedUnpickler(io.BytesIO(pickle.dumps({"a": [1, 2]}))).load()
        {'a': [1, 2]}
    """

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def safe_load(data: bytes, source: str):
    """Unpickle ``data`` (latin-1 strings, as CIFAR's python batches need) or raise a user error.

    Example:
        >>> safe_load(pickle.dumps([1, 2]), "example")
        [1, 2]
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise EdgefaultError(f"{source}: not a safe dataset pickle ({exc})") from None
