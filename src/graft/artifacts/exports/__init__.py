"""The formats ``graft export`` writes: one registry, one contract per format.

Each format is an :class:`ExportFormat` registered under its ``--format`` name. Its writer is
``write(job: ExportJob) -> list[str]`` in its module: it writes ``job.path`` from the run's model (the float
ONNX export ``job.onnx_path``, already checked against torch, or the torch model itself),
checks what it wrote against that ONNX model on the run's own images where its runtime runs
here, and returns the lines ``graft export`` prints. Writers live in their own modules, imported
only when their format is chosen; a format's heavy library is an optional extra
(``pip install 'graft-vision[openvino]'``), and :func:`check_available` names it in one line when it is
missing, before anything is written. The module's ``is_export(path) -> bool`` tells an earlier
graft export of that format (which ``graft export`` may replace) from anyone else's file.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from graft.errors import GraftError


@dataclass(frozen=True)
class ExportFormat:
    """A ``--format``: ``suffix`` of the default path (``RUN/model<suffix>``); ``module``: the
    module of this package holding ``write`` and ``is_export``; ``modules``: the import names the
    writer needs and ``extra`` the pyproject extra that installs them; ``inputs``: the ``--input``
    forms it takes; ``options``: the export settings only this format uses (``int8``)."""

    name: str
    suffix: str
    module: str
    summary: str
    modules: tuple[str, ...] = ()
    extra: str | None = None
    inputs: tuple[str, ...] = ("float", "uint8")
    options: tuple[str, ...] = field(default=())

    def _implementation(self):
        return importlib.import_module(f"{__name__}.{self.module}")

    def write(self, job: "ExportJob") -> list[str]:
        return self._implementation().write(job)

    def is_export(self, path: Path) -> bool:
        return self._implementation().is_export(Path(path))


FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    if fmt.name in FORMATS:
        raise ValueError(f"export format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise GraftError(f"unknown export format {name!r}: {', '.join(FORMATS)}")
    return FORMATS[name]


def check_available(fmt: ExportFormat) -> None:
    """GraftError in one line naming the extra to install when a module ``fmt`` needs is missing."""
    for module in fmt.modules:
        if importlib.util.find_spec(module) is None:
            raise GraftError(f"--format {fmt.name} needs the {module!r} package: "
                             f"pip install 'graft-vision[{fmt.extra}]'")


@dataclass
class ExportJob:
    """What a writer gets: the loaded ``model`` (:class:`graft.artifacts.model.GraftModel`), its
    ``model_dir`` and ``run_dir`` (the folder holding split.csv, or None), the float ONNX export
    ``onnx_path`` (a temporary file for formats other than onnx), the destination ``path``, the
    export ``settings`` (the export command's Config) and the ONNX ``metadata`` entries (strings)
    every format records: classes, preprocessing, the input recipe, the source digests."""

    model: object
    model_dir: Path
    run_dir: Path | None
    onnx_path: Path
    path: Path
    settings: object
    metadata: dict


register_format(ExportFormat("onnx", ".onnx", "onnx_format", "ONNX (float; --int8: ONNX Runtime static int8)",
                             options=("int8",)))
register_format(ExportFormat("openvino", ".xml", "openvino_format", "OpenVINO IR (.xml + .bin)",
                             modules=("openvino",), extra="openvino"))
register_format(ExportFormat("coreml", ".mlpackage", "coreml_format",
                             "Core ML ML Program classifier (.mlpackage; an image input)",
                             modules=("coremltools",), extra="coreml", inputs=("float",)))
