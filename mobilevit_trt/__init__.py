"""mobilevit_trt: the library behind the MobileViT -> ONNX -> TensorRT command-line scripts.

Everything here imports without a GPU and without TensorRT; heavy imports (torch, onnx, tensorrt) are lazy.
"""
__version__ = "0.1.0"
