"""infership.convert — PyTorch → ONNX export checked against torch, simplification, fp16, int8, OpenVINO IR."""
