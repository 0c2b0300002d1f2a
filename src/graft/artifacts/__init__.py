"""The model a training path ends in: :class:`~graft.artifacts.model.GraftModel` (backbone +
head, load/save as graft.json + weights.safetensors, nothing unpickled), ONNX export
(:mod:`.export`) and the run folder (:mod:`.run_folder`)."""
