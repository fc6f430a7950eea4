"""edgefault: memory faults in activation-sparse quantized CNNs, from training to int8 ONNX Runtime."""

__version__ = "0.1.0"
