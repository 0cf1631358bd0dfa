"""infership.calibration — re-iterable calibration data and adapters for ONNX Runtime and NNCF."""
