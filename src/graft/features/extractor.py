"""Frozen features: a backbone cut at a layer, run over images fast, cached on disk.

:class:`FeatureExtractor` is a scikit-learn transformer (image paths in, feature matrix out),
so it drops into a ``Pipeline`` in front of any classifier. Under the hood:

* decoding (JPEG draft mode, resize, crop) runs in a thread and overlaps inference;
* inference runs through ONNX Runtime when available (faster than eager torch on CPU);
* images stream through in batches, so memory stays flat in the number of images;
* each image's vector is cached under (backbone, weights hash, layer, preprocessing, file
  identity): a second run, or another head on the same images, skips extraction.
"""
from __future__ import annotations

import collections
import concurrent.futures
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from graft._io.progress import progress_bar
from graft.data.folders import ImageFolder, load_image
from graft.data.preprocess import Preprocessing
from graft.defaults import BATCH_SIZE, DEFAULT_BACKBONE, ENGINE
from graft.errors import GraftError, ImageDecodeError
from graft.features.cache import FEATURE_FORMAT, cache_root, stable_hash
from graft.features.vectors import Features, gather_features, skip_image

__all__ = ["FeatureExtractor", "FeatureNetwork", "Features", "gather_features"]

# torch and timm are imported only when a network is built or run (fit, extraction misses):
# answering from the cache must not pay their start-up.


class FeatureNetwork:
    """An already built feature network as a :class:`FeatureExtractor`'s ``backbone``: a saved
    or fine-tuned model's, which no registry name rebuilds.

    ``fit`` uses ``net`` (a :class:`~graft.backbones.PooledFeatures`) as it is, so
    ``sklearn.base.clone(extractor).fit()`` gives the same network (clone deep-copies it), not
    the ImageNet weights of its ``architecture``. ``architecture`` (the timm name) and
    ``preprocessing`` describe it; they enter the feature cache's key with the weights' hash.
    """

    def __init__(self, net, preprocessing: Preprocessing, architecture: str):
        self.net = net
        self.preprocessing = preprocessing
        self.architecture = architecture

    def __repr__(self) -> str:
        return f"FeatureNetwork({self.architecture!r}, layer={self.net.cut_layer!r})"


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """Frozen pretrained backbone as a scikit-learn transformer: image paths -> features.

    Parameters
    ----------
    backbone : registry name, a built :class:`Backbone`, or a :class:`FeatureNetwork` (a saved
        or fine-tuned model's network, see :meth:`from_network`); default EfficientNet-Lite0.
    layer : cut layer (name or index from ``graft layers``); None = final pooled features.
    weights : optional local weights file for the backbone.
    image_size : input resolution; None = the one the weights were trained at.
    batch_size, engine ("auto" | "onnx" | "torch"), cache (bool), progress (bool).
    flip : mirror every image horizontally before the network (test-time augmentation); the
        mirrored features are cached apart from the plain ones.
    processes : "auto" (one worker process per core for a cold extraction of a few hundred
        images or more, on ONNX Runtime), a number, or 0 to stay in this process; "ray:N": N
        Ray Data actors, on the running Ray cluster or a local one (graft.features.ray_workers).
    """

    # scikit-learn's convention: every hyper-parameter is an __init__ keyword (get_params / clone)
    def __init__(self, backbone=DEFAULT_BACKBONE, layer=None, weights=None, image_size=None,  # noqa: PLR0913
                 batch_size=BATCH_SIZE, engine=ENGINE, cache=True, progress=False, decode_workers=1, flip=False,
                 processes="auto"):
        self.backbone = backbone
        self.layer = layer
        self.weights = weights
        self.image_size = image_size
        self.batch_size = batch_size
        self.engine = engine
        self.cache = cache
        self.progress = progress
        self.decode_workers = decode_workers
        self.flip = flip
        self.processes = processes

    # -- fitting: nothing is learned, the backbone is built and described -------------------
    def fit(self, X=None, y=None):
        """Build the network (backbone cut at ``layer``) and the keys of its feature cache.

        ``X`` and ``y`` are ignored (scikit-learn's signature): nothing is learned.

        Returns
        -------
        self

        Raises
        ------
        GraftError
            For an unknown backbone or layer, or a ``layer`` / ``weights`` that a
            :class:`FeatureNetwork` (already cut, already weighted) cannot take.
        """
        from graft.backbones import Backbone, create_backbone

        if isinstance(self.backbone, FeatureNetwork):
            built = self.backbone
            if self.layer != built.net.cut_layer or self.weights is not None:
                raise GraftError(f"a built feature network (cut at {built.net.cut_layer!r}) takes neither another "
                                 f"layer ({self.layer!r}) nor weights ({self.weights!r})")
            self._set_network(built.net, built.preprocessing, built.architecture)
            return self
        if isinstance(self.backbone, Backbone):
            backbone = self.backbone
        else:
            backbone = create_backbone(self.backbone, weights=self.weights)
        layer = backbone.resolve_layer(self.layer)
        self._set_network(backbone.feature_net(layer), backbone.preprocessing, backbone.architecture)
        return self

    @classmethod
    def from_network(cls, net, preprocessing: Preprocessing, architecture: str,
                     **params) -> "FeatureExtractor":
        """A fitted extractor over an already built feature network (a saved or fine-tuned
        model's ``PooledFeatures``); ``architecture`` is its timm name. The network is the
        extractor's ``backbone`` (a :class:`FeatureNetwork`), so ``clone()`` + ``fit`` gives
        the same network again."""
        return cls(backbone=FeatureNetwork(net, preprocessing, architecture), layer=net.cut_layer,
                   image_size=preprocessing.size, **params).fit()

    def _set_network(self, net, preprocessing: Preprocessing, architecture: str):
        from graft.backbones import state_sha256

        self.feature_net_ = net.eval()
        self.layer_ = net.cut_layer
        self.preprocessing_ = preprocessing
        if self.image_size:
            self.preprocessing_ = preprocessing.with_size(int(self.image_size))
        # the network (its ONNX export is shared) and what it is fed (the feature cache's key)
        self.network_key_ = stable_hash({
            "format": FEATURE_FORMAT,
            "architecture": architecture,
            "weights_sha256": state_sha256(net),
            "layer": self.layer_,
            "preprocessing": self.preprocessing_.to_dict(),
        })
        self.extractor_key_ = stable_hash({"network": self.network_key_, "flip": True}) if self.flip \
            else self.network_key_
        self._runner = None

    def _ensure_fitted(self):
        """Raise scikit-learn's NotFittedError before :meth:`fit` (it builds the network)."""
        check_is_fitted(self, "feature_net_", msg=(
            "This FeatureExtractor is not fitted yet: call .fit() first (it builds the backbone network; "
            "nothing is learned), e.g. FeatureExtractor(...).fit().extract(paths)"))

    def transform(self, X) -> np.ndarray:
        """Features (n, d) float32 for each of the n paths in ``X``; an undecodable image is an
        error (rows must align).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        ImageDecodeError
            For an image that cannot be read.
        """
        result = self.extract(list(X), strict=True)
        return result.vectors

    def get_feature_names_out(self, input_features=None):
        self._ensure_fitted()
        dim = self.feature_net_.output_dim(self.preprocessing_.size)
        return np.asarray([f"feature{i}" for i in range(dim)], dtype=object)

    # -- extraction -------------------------------------------------------------------------
    @property
    def engine_(self) -> str:
        return self._get_runner().name

    def _get_runner(self):
        if getattr(self, "_runner", None) is not None:
            return self._runner
        self._ensure_fitted()
        from graft._io.onnx import OnnxRunner, TorchRunner, export_onnx

        net = self.feature_net_
        runner = None
        if self.engine in ("auto", "onnx"):
            try:
                self._onnx_path_ = self._onnx_file(export_onnx)
                runner = OnnxRunner(self._onnx_path_)
            except Exception as exc:  # ORT missing or an op it lacks: torch always works
                if self.engine == "onnx":
                    raise GraftError(f"ONNX Runtime engine unavailable: {exc}") from exc
                warnings.warn(f"ONNX Runtime unavailable ({exc}); extracting with torch")
        elif self.engine != "torch":
            raise GraftError(f"unknown engine {self.engine!r}: use auto, onnx or torch")
        self._runner = runner or TorchRunner(net)
        return self._runner

    def _onnx_file(self, export_onnx) -> Path:
        """The exported feature network: kept in the cache, or in a temporary folder when the
        cache cannot be written (a read-only cache must not cost ONNX Runtime's speed)."""
        onnx_path = cache_root() / "onnx" / f"{self.network_key_}.onnx"
        if onnx_path.exists():
            return onnx_path
        try:
            return export_onnx(self.feature_net_, onnx_path, self.preprocessing_.size, ["features"])
        except OSError:
            import tempfile

            self._scratch = tempfile.TemporaryDirectory(prefix="graft-onnx-")
            return export_onnx(self.feature_net_, Path(self._scratch.name) / "features.onnx",
                               self.preprocessing_.size, ["features"])

    def _decode(self, path: Path) -> np.ndarray:
        image = load_image(path, min_side=self.preprocessing_.resize_size)
        array = self.preprocessing_.to_array(image)
        return np.ascontiguousarray(array[:, :, ::-1]) if self.flip else array

    def extract(self, paths, labels=None, classes=None, strict: bool = False,
                desc: str = "extracting features") -> Features:
        """Features for ``paths``; undecodable images are skipped with a warning (or raise with
        ``strict``). Raises NotFittedError before :meth:`fit`."""
        self._ensure_fitted()
        compute = lambda *args: self._run(*args, desc=desc)  # noqa: E731
        return gather_features(self.extractor_key_ if self.cache else None, paths, labels, classes,
                               strict, compute)

    def extract_folder(self, folder: ImageFolder, strict: bool = False, desc: str | None = None) -> Features:
        labelled = bool(folder.classes)  # an unlabelled folder (scan_images, scan_unlabelled) has none
        return self.extract(folder.paths, labels=folder.labels if labelled else None,
                            classes=folder.classes if labelled else None, strict=strict,
                            desc=desc or f"features {folder.root.name}")

    def _run(self, paths, identities, todo, vectors, skipped, strict, cache, desc):
        from graft.features.workers import process_count

        runner = self._get_runner()
        on_ray = str(self.processes).startswith("ray:")
        workers = (int(str(self.processes)[4:]) if on_ray else process_count(len(todo), self.processes)) \
            if runner.name == "onnx" and todo else 0
        if workers:
            return self._run_in_processes(paths, identities, todo, vectors, skipped, strict, cache, desc, workers)
        window = max(2 * self.batch_size, 4)  # decoded images in flight: bounds memory
        bar = progress_bar(total=len(todo), desc=desc, unit="img", enable=self.progress)
        batch_arrays: list[np.ndarray] = []
        batch_index: list[int] = []

        def flush():
            out = runner(np.stack(batch_arrays))
            for k, vec in zip(batch_index, out):
                vectors[k] = np.asarray(vec, dtype=np.float32)
            if cache is not None:
                cache.put_many([(identities[k], vectors[k]) for k in batch_index])
            bar.update(len(batch_index))
            batch_arrays.clear()
            batch_index.clear()

        with concurrent.futures.ThreadPoolExecutor(max_workers=self.decode_workers) as pool:
            pending: collections.deque = collections.deque()
            queue = iter(todo)
            for k in queue:
                pending.append((k, pool.submit(self._decode, paths[k])))
                if len(pending) >= window:
                    break
            while pending:
                k, future = pending.popleft()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self._decode, paths[nxt])))
                try:
                    batch_arrays.append(future.result())
                    batch_index.append(k)
                except ImageDecodeError as exc:
                    bar.update(1)
                    if cache is not None:
                        cache.put_failure(identities[k], exc.reason)
                    if strict:
                        for _, other in pending:
                            other.cancel()
                    skip_image(skipped, exc, strict)
                if len(batch_arrays) == self.batch_size:
                    flush()
            if batch_arrays:
                flush()
        bar.close()

    def _run_in_processes(self, paths, identities, todo, vectors, skipped, strict, cache, desc, workers):  # noqa: PLR0913
        """``_run`` with decoding and inference in worker processes (see graft.features.workers),
        or in Ray actors (``processes="ray:N"``, graft.features.ray_workers: the same chunks)."""
        if str(self.processes).startswith("ray:"):
            from graft.features.ray_workers import extract_on_ray as extract_in_processes
        else:
            from graft.features.workers import extract_in_processes

        onnx_path = self._onnx_path_
        bar = progress_bar(total=len(todo), desc=desc, unit="img", enable=self.progress)
        chunks = extract_in_processes(onnx_path, self.preprocessing_.to_dict(), self.flip,
                                      [str(paths[k]) for k in todo], self.batch_size, workers)
        try:
            for positions, found, failures in chunks:
                for position, vector in zip(positions, found):
                    vectors[todo[position]] = vector
                if cache is not None and positions:
                    cache.put_many([(identities[todo[p]], vectors[todo[p]]) for p in positions])
                for position, reason in failures:
                    k = todo[position]
                    if cache is not None:
                        cache.put_failure(identities[k], reason)
                    skip_image(skipped, ImageDecodeError(paths[k], reason), strict)
                bar.update(len(positions) + len(failures))
        finally:
            chunks.close()
            bar.close()
