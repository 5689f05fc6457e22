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
choice, a seeded random VGG19. ``start="linear-ot"`` (or another per-pixel reference-based method) maps
the source globally first and lets the local transfer refine that (``benchmarks/restain.py`` measures
whether it does).

Loading checks the stored reference as ``fit`` checks a new one (issue 12): its size is read from the
stored array's header before the rest is decompressed (a few kilobytes cannot claim a gigapixel), then it
needs tissue whose colour varies in every channel and the size the layer needs. A source without tissue,
or whose tissue has a flat channel, is passed through with a warning.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
import zlib

import numpy as np

from stainlab.errors import InputError, NoTissueError, NoTissueWarning
from stainlab.io.arrays import check_rgb8
from stainlab.io.images import MAX_PIXELS_VARIABLE, max_pixels
from stainlab.nct import (
    LAMBDAS,
    LUMINANCE,
    NCTConfig,
    ReferenceCache,
    Timings,
    feature_network,
    neural_color_transfer,
)
from stainlab.nct.features import LAYERS
from stainlab.nct.pipeline import check_labels, check_size
from stainlab.transforms.base import Transform, as_image_list, require_tissue
from stainlab.transforms.checks import (MAX_SEED, brief, check_bool, check_fields, check_float, check_int,
                                        require_color_spread)

MAX_CLUSTERS = 32       # k-means clusters of the feature enhancement (paper 001 Sec. 2.2.3; default 4)
MAX_WORK_SIDE = 4096    # pixels; the correspondence search grows with the square of this
MAX_LAMBDA = 1000.0     # weights of E_L and E_NL (paper 001 Eq. 4: 0.125 and 2, tuned 0.001 and 0.4)
_NPY_PREFIX = 10        # magic string, version and the header length of a version 1.0 .npy file
_NPY_MAX_HEADER = 1 << 16


def _encode(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(zlib.compress(buffer.getvalue(), 6)).decode("ascii")


def _decode(text, dtype, channels: tuple[int, ...], what: str) -> np.ndarray:
    """The array that :func:`_encode` stored, which must be ``dtype`` of shape ``(H, W) + channels``.

    The .npy header is decompressed first and its shape checked against the pixel limit
    (:func:`stainlab.io.images.max_pixels`), then exactly the bytes it announces are decompressed: a
    small text cannot expand into a huge array (a decompression bomb), however it was made.
    """
    try:
        inflate = zlib.decompressobj()
        head = inflate.decompress(base64.b64decode(text, validate=True), _NPY_PREFIX + _NPY_MAX_HEADER)
        stream = io.BytesIO(head)
        if np.lib.format.read_magic(stream) != (1, 0):
            raise ValueError("not a version 1.0 .npy array")
        shape, fortran, stored = np.lib.format.read_array_header_1_0(stream, max_header_size=_NPY_MAX_HEADER)
    except (TypeError, ValueError, zlib.error) as err:  # binascii.Error is a ValueError
        raise InputError(f"{what}: stored array cannot be decoded ({err})") from None
    if stored != np.dtype(dtype) or fortran or len(shape) != 2 + len(channels) or shape[2:] != channels:
        raise InputError(f"{what}: stored array is {stored} of shape {shape}, expected {np.dtype(dtype)} of "
                         f"shape {('H', 'W') + channels}")
    limit = max_pixels()
    if shape[0] * shape[1] > limit:
        raise InputError(f"{what}: stored image of {shape[0]}x{shape[1]} pixels is over the limit of {limit:,} "
                         f"(raise it with {MAX_PIXELS_VARIABLE}=N if it is real)")
    size = stream.tell() + math.prod(shape) * stored.itemsize
    if len(head) <= size:  # one byte more than announced, to see whether there is more (0 would mean all)
        head += inflate.decompress(inflate.unconsumed_tail, size + 1 - len(head))
    if len(head) != size:
        raise InputError(f"{what}: stored array's data is {'longer' if len(head) > size else 'shorter'} than "
                         f"the {'x'.join(map(str, shape))} {stored} array its header announces")
    return np.load(io.BytesIO(head), allow_pickle=False)


def _numbers(value, table: dict, what: str, high: float) -> tuple[float, ...]:
    """A named entry of ``table`` or as many explicit numbers, each from 0 to ``high``."""
    if isinstance(value, str):
        if value not in table:
            raise InputError(f"{what} must be one of {', '.join(table)} or the numbers, got {value!r}")
        return tuple(table[value])
    count = len(next(iter(table.values())))
    if not (isinstance(value, (list, tuple)) and len(value) == count):
        raise InputError(f"{what} must be one of {', '.join(table)} or {count} numbers, got {brief(value)}")
    return tuple(check_float(what, v, 0.0, high) for v in value)


def _luminance(value) -> tuple[float, ...]:
    """Luminance weights: a named set or three non-negative weights that add up to 1 (Eq. 2 and 3)."""
    weights = _numbers(value, LUMINANCE, "nct: luminance", 1.0)
    if abs(sum(weights) - 1.0) > 1e-3:
        raise InputError(f"nct: luminance weights must add up to 1, got {list(weights)}")
    return weights


def _check_start(start) -> str | None:
    """``start``: None, or a deterministic per-pixel reference-based method (``"linear-ot"``, ``"reinhard"``
    ...) whose global map comes before the local transfer (paper 001 combines a global and a local
    transfer)."""
    if start is None:
        return None
    from stainlab.transforms.registry import create   # the registry imports this module by name

    try:
        t = create(start) if isinstance(start, str) and start != "nct" else None
    except InputError:          # an unknown name, or a learned kind without its weight file
        t = None
    if t is None or not (t.per_pixel and t.uses_reference and t.deterministic):
        raise InputError(f"nct: start must be None or a deterministic per-pixel method fitted on a reference "
                         f"(e.g. 'linear-ot'), got {brief(start)}")
    return start


def _require_usable(image: np.ndarray, what: str) -> None:
    """:class:`NoTissueError` unless ``image`` has tissue whose colour varies in every channel (tissue of
    one colour on glass leaves k-means empty clusters and the feature statistics nothing to standardise)."""
    colors = image.reshape(-1, 3).astype(np.float64)
    require_color_spread(colors[require_tissue(colors, None, what)], None, what)


class NeuralColorTransfer(Transform):
    """Neural colour transfer (paper 001): semantic VGG19 matches and local linear colour maps from one reference."""

    name = "nct"
    per_pixel = False
    needs_weights = True

    def __init__(self, features: str = "vgg19", layer: int = 1, lambdas="default", luminance="bt601",
                 clusters: int = 4, progressive: bool = False, work_side: int | None = 512, seed: int = 0,
                 start: str | None = None) -> None:
        super().__init__()
        if not (isinstance(features, str) and features):
            raise InputError(f"nct: features must be vgg19, random or a weight file, got {brief(features)}")
        self.features = features
        self.layer = check_int("nct: layer", layer, LAYERS[0], LAYERS[-1])
        lambda_l, lambda_nl = _numbers(lambdas, LAMBDAS, "nct: lambdas", MAX_LAMBDA)
        self.lambdas = lambdas if isinstance(lambdas, str) else [lambda_l, lambda_nl]
        weights = _luminance(luminance)
        self.luminance = luminance if isinstance(luminance, str) else list(weights)
        self.clusters = check_int("nct: clusters", clusters, 1, MAX_CLUSTERS)
        self.progressive = check_bool("nct: progressive", progressive)
        self.work_side = None if work_side is None else check_int("nct: work_side", work_side, 16, MAX_WORK_SIDE)
        self.seed = check_int("nct: seed", seed, 0, MAX_SEED)
        self.start = _check_start(start)
        self.config = NCTConfig(layer=self.layer, lambda_l=lambda_l, lambda_nl=lambda_nl, luminance=weights,
                                clusters=self.clusters, progressive=self.progressive, work_side=self.work_side,
                                seed=self.seed)
        self._net = None
        self._reference: ReferenceCache | None = None
        self._start = None     # the fitted global map, when ``start`` names one

    @property
    def net(self):
        """The VGG19 (built on first use: ``stainlab.load("nct")`` reads no weight file)."""
        if self._net is None:
            self._net = feature_network(self.features, self.seed)
        return self._net

    def fit(self, reference, labels=None, *, value_range=None) -> NeuralColorTransfer:
        """Remember the reference (one uint8 RGB image with tissue, or a torch tensor read as
        ``Transform.fit`` reads it) and, optionally, its segmentation (an integer label per pixel; then
        every image transformed needs one too)."""
        images = as_image_list(reference, value_range=value_range)
        if len(images) != 1:
            raise InputError(f"nct: fit takes one reference image, got {len(images)}")
        reference = self._checked_reference(images[0].copy(), labels, "nct reference")
        self.net  # noqa: B018 - fail now, not on the first image, when the weight file is missing
        self._adopt(reference)
        self._fitted = True
        return self

    def _adopt(self, reference: ReferenceCache) -> None:
        """Take ``reference``, fitting the global map of ``start`` on it (also on load: the reference is
        the whole state)."""
        self._reference = reference
        if self.start is not None:
            from stainlab.transforms.registry import create   # the registry imports this module by name

            self._start = create(self.start).fit(reference.image)

    def _checked_reference(self, image: np.ndarray, labels, what: str) -> ReferenceCache:
        """The checks of a reference, new or loaded: tissue, colour in every channel, labels, size."""
        image = check_rgb8(image, what)
        _require_usable(image, what)
        labels = check_labels(labels, image.shape, what)
        check_size(image.shape, self.config, what)
        return ReferenceCache(image, labels)

    def transform(self, image: np.ndarray, labels=None, timings: Timings | None = None) -> np.ndarray:
        """uint8 HxWx3 in and out; ``labels``: the image's segmentation when the reference has one.
        An image without tissue, or with a flat colour channel, is passed through unchanged with a
        :class:`NoTissueWarning`."""
        self._require_fitted()
        image = check_rgb8(image)
        try:
            _require_usable(image, "nct source")
        except NoTissueError as err:
            warnings.warn(f"{self.name}: {err}; image passed through unchanged", NoTissueWarning, stacklevel=2)
            return image.copy()
        if self._start is not None:
            image = self._start(image)
        return neural_color_transfer(image, self._reference, self.net, self.config, labels, timings=timings)

    def _transform(self, image: np.ndarray) -> np.ndarray:
        return self.transform(image)

    def _get_state(self):
        labels = self._reference.labels
        return {"reference": _encode(self._reference.image),
                "reference_labels": None if labels is None else _encode(labels)}

    def _set_state(self, state):
        what = "nct fitted state"
        check_fields(state, ("reference", "reference_labels"), what)
        if "reference" not in state:
            raise InputError(f"{what}: reference is missing")
        image = _decode(state["reference"], np.uint8, (3,), what)
        labels = state.get("reference_labels")
        labels = None if labels is None else _decode(labels, np.int64, (), f"{what} (reference_labels)")
        self._adopt(self._checked_reference(image, labels, what))
