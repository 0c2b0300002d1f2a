"""Using a trained model: :class:`~graft.serve.onnx_predictor.OnnxPredictor` (ONNX Runtime, no
torch) and ``graft serve``, an HTTP API with dynamic batching and a preview page
(:mod:`graft.serve.app`; needs the ``serve`` extra: FastAPI, uvicorn, python-multipart)."""
