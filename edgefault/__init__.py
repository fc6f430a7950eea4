"""edgefault: memory faults in activation-sparse quantized CNNs, from training to int8 ONNX Runtime.

The version has one home, ``pyproject.toml``; this reads it from the installed metadata.

Example:
    >>> __version__.count(".") >= 2
    True
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgefault")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0.0.0+unknown"
