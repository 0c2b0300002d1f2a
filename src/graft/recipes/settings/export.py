"""Settings of ``graft export``: the format, the destination, the input form and int8."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graft.config import Config, setting
from graft.errors import GraftError

# graft.artifacts.exports.FORMATS' names (settings import no torch; a test keeps them equal)
EXPORT_FORMATS = ("onnx", "openvino", "coreml")


@dataclass
class ExportConfig(Config):
    """``graft export``: a saved model in another format, checked against the model it came from."""

    COMMAND: ClassVar[str] = "export"
    PATHS: ClassVar[tuple[str, ...]] = ("run_dir", "out")

    run_dir: str = setting(None, "Run folder (or model folder) to export.", argument="run_dir", path=True)
    format: str = setting("onnx", "onnx; openvino: OpenVINO IR .xml + .bin (pip install 'graft-vision[openvino]'); "
                                  "coreml: a Core ML classifier .mlpackage taking an RGB image (pip install "
                                  "'graft-vision[coreml]').", choices=EXPORT_FORMATS)
    out: str | None = setting(None, "Default RUN/model.onnx (.xml, .mlpackage); never inside RUN/model/.",
                              short="-o", path=True)
    input_type: str = setting("float", "float: normalised (N,3,S,S); uint8: cropped RGB pixels (N,S,S,3), "
                                       "normalised inside.", flag="--input", choices=("float", "uint8"))
    int8: bool = setting(False, "ONNX only: int8 by ONNX Runtime static quantisation, calibrated on the run's "
                                "training images; refused when it loses more than --int8-max-loss points of "
                                "validation accuracy. Written to RUN/model.onnx, predict and serve run it.")
    int8_max_loss: float = setting(1.0, "With --int8: the most validation accuracy (points) int8 may lose.", low=0)
    calibration_images: int = setting(64, "With --int8: training images to calibrate on (spread over the "
                                           "classes).", low=1)

    def __post_init__(self):
        if self.run_dir is None:
            raise GraftError("export needs a run folder (RUN_DIR)")
        super().__post_init__()
