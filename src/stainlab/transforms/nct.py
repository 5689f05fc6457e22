"""Neural colour transfer behind the shared face: ``stainlab.load("nct").fit(reference)(image)``.

Paper 001 (Arshad, Sajid & Khan, "Stain normalization of hematology slides using neural color
transfer"), Algorithm 2; the algorithm lives in :mod:`stainlab.nct`. Unlike the per-pixel methods it
looks at context: VGG19 features match nucleus to nucleus and stroma to stroma, and each pixel gets its
own linear colour map, so it runs on whole images (and through the tiler with overlap), not through a
colour lookup table.

The fitted state is the reference image itself (and its segmentation, if one was given), stored in the
JSON as a compressed, base64-encoded array; the network is rebuilt from ``features`` when loaded.
``features="vgg19"`` (the default) reads the published ImageNet weights from the torch cache and fails
with a message naming the file when they are absent; ``features="random"`` is the explicit offline
choice, a seeded random VGG19.
"""

from __future__ import annotations

import base64
import io
import warnings
import zlib

import numpy as np

from stainlab.errors import InputError, NoTissueError, NoTissueWarning
from stainlab.io.arrays import check_rgb8
from stainlab.nct import (
    LAMBDAS,
    LUMINANCE,
    NCTConfig,
    ReferenceCache,
    Timings,
    feature_network,
    neural_color_transfer,
)
from stainlab.nct.features import stage_of
from stainlab.nct.pipeline import check_labels, check_size
from stainlab.transforms.base import Transform, as_image_list, require_tissue


def _encode(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(zlib.compress(buffer.getvalue(), 6)).decode("ascii")


def _decode(text) -> np.ndarray:
    try:
        return np.load(io.BytesIO(zlib.decompress(base64.b64decode(text, validate=True))), allow_pickle=False)
    except (TypeError, ValueError, zlib.error, OSError) as err:  # binascii.Error is a ValueError
        raise ValueError(f"stored array cannot be decoded ({err})") from None


def _pair(value, table: dict, what: str) -> tuple[float, ...]:
    """A named entry of ``table`` or an explicit tuple of numbers."""
    if isinstance(value, str):
        if value not in table:
            raise InputError(f"nct: unknown {what} {value!r}; use one of {', '.join(table)} or give the numbers")
        return tuple(table[value])
    numbers = tuple(float(v) for v in value)
    if len(numbers) != len(next(iter(table.values()))) or not all(np.isfinite(numbers)) or min(numbers) < 0:
        raise InputError(f"nct: {what} must be non-negative numbers like {next(iter(table.values()))}, got {value!r}")
    return numbers


class NeuralColorTransfer(Transform):
    """Neural colour transfer (paper 001): semantic VGG19 matches and local linear colour maps from one reference."""

    name = "nct"
    per_pixel = False
    needs_weights = True

    def __init__(self, features: str = "vgg19", layer: int = 1, lambdas="default", luminance="bt601",
                 clusters: int = 4, progressive: bool = False, work_side: int | None = 512, seed: int = 0) -> None:
        super().__init__()
        try:
            self.features = str(features)
            self.layer, self.clusters, self.seed = int(layer), int(clusters), int(seed)
            self.lambdas = lambdas if isinstance(lambdas, str) else list(lambdas)
            self.luminance = luminance if isinstance(luminance, str) else list(luminance)
            self.progressive = bool(progressive)
            self.work_side = None if work_side is None else int(work_side)
            lambda_l, lambda_nl = _pair(lambdas, LAMBDAS, "lambdas")
        except InputError:
            raise
        except (TypeError, ValueError) as err:
            raise InputError(f"nct: bad parameter ({err})") from None
        if self.clusters < 1 or (self.work_side is not None and self.work_side < 16):
            raise InputError(f"nct: clusters must be >= 1 and work_side >= 16 (or None), got "
                             f"{clusters!r} and {work_side!r}")
        self.config = NCTConfig(layer=self.layer, lambda_l=lambda_l, lambda_nl=lambda_nl,
                                luminance=_pair(luminance, LUMINANCE, "luminance weights"), clusters=self.clusters,
                                progressive=self.progressive, work_side=self.work_side, seed=self.seed)
        stage_of(self.layer)  # an unknown layer fails here, naming the known ones
        self._net = None
        self._reference: ReferenceCache | None = None

    @property
    def net(self):
        """The VGG19 (built on first use: ``stainlab.load("nct")`` reads no weight file)."""
        if self._net is None:
            self._net = feature_network(self.features, self.seed)
        return self._net

    def fit(self, reference, labels=None) -> NeuralColorTransfer:
        """Remember the reference (one uint8 RGB image with tissue) and, optionally, its segmentation
        (an integer label per pixel; then every image transformed needs one too)."""
        images = as_image_list(reference)
        if len(images) != 1:
            raise InputError(f"nct: fit takes one reference image, got {len(images)}")
        image = images[0]
        require_tissue(image.reshape(-1, 3).astype(np.float64), None, "nct reference")
        labels = check_labels(labels, image.shape, "nct reference")
        check_size(image.shape, self.config, "nct reference")
        self.net  # noqa: B018 - fail now, not on the first image, when the weight file is missing
        self._reference = ReferenceCache(image.copy(), labels)
        self._fitted = True
        return self

    def transform(self, image: np.ndarray, labels=None, timings: Timings | None = None) -> np.ndarray:
        """uint8 HxWx3 in and out; ``labels``: the image's segmentation when the reference has one.
        An image without tissue is passed through unchanged with a :class:`NoTissueWarning`."""
        self._require_fitted()
        image = check_rgb8(image)
        try:
            require_tissue(image.reshape(-1, 3).astype(np.float64), None, "nct source")
        except NoTissueError as err:
            warnings.warn(f"{self.name}: {err}; image passed through unchanged", NoTissueWarning, stacklevel=2)
            return image.copy()
        return neural_color_transfer(image, self._reference, self.net, self.config, labels, timings=timings)

    def _transform(self, image: np.ndarray) -> np.ndarray:
        return self.transform(image)

    def _get_state(self):
        labels = self._reference.labels
        return {"reference": _encode(self._reference.image),
                "reference_labels": None if labels is None else _encode(labels)}

    def _set_state(self, state):
        image = _decode(state["reference"])
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"stored reference is not a uint8 RGB image ({image.dtype}, {image.shape})")
        labels = state.get("reference_labels")
        labels = None if labels is None else check_labels(_decode(labels), image.shape, "stored reference")
        self._reference = ReferenceCache(image, labels)
