"""Private infrastructure: atomic files, progress bars, ONNX Runtime helpers, memory estimates,
the torch-free model-folder format. Nothing here knows about training or methods."""
