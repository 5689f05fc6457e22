"""The shared face of every method, classical or learned.

``t.fit(reference)`` learns the target look (a no-op for reference-free methods), ``t(image)`` maps a
uint8 HxWx3 RGB array to another of the same shape (or a torch batch to the same batch, with the input
conventions of :mod:`stainlab.io.arrays`: through the method's differentiable torch engine on the batch's
device where it has one, :mod:`stainlab.transforms.torch_engine`, else image by image through NumPy),
``t.save(path)`` writes the fitted transform as JSON and ``stainlab.load(path)`` restores it to
identical outputs. One harness, one tiler and one CLI serve all methods through this face.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from stainlab.color.pixels import count_below, tissue_limit
from stainlab.color.tissue import TISSUE_BETA, tissue_mask
from stainlab.errors import InputError, NoTissueError, NoTissueWarning, NotFittedError
from stainlab.io.arrays import check_rgb8, is_torch_tensor, map_rgb8, rgb8_images
from stainlab.io.atomic import atomic_write_text
from stainlab.transforms import small
from stainlab.transforms.channels import split_pixels
from stainlab.transforms.checks import check_int, check_saved
from stainlab.transforms.lut import DEFAULT_BITS, ColorHistogram, apply_table, to_uint8

ENGINES = ("auto", "torch", "numpy")   # how ``t(tensor)`` maps a torch batch (see ``Transform.__call__``)
FORMAT = "stainlab-transform"
FORMAT_VERSION = 1
MIN_TISSUE_FRACTION = 0.005
# Per-image statistics (stain matrices, LAB moments) are taken on a 64-level lattice of mean colours:
# tens of thousands of weighted colours instead of hundreds of thousands, at a cost of hundredths of a
# degree in stain angle. Methods whose statistics are per-channel histograms keep them exact.
STATS_BITS = 6


def as_image_list(images, what: str = "reference", value_range=None) -> list[np.ndarray]:
    """Accept one image or a list/tuple of images; validate each as uint8 HxWx3. A torch tensor
    ``(3,H,W)`` or ``(N,3,H,W)``, alone or in the list, gives its images, read as ``t(tensor)`` reads
    them (``value_range``: see :mod:`stainlab.io.arrays`)."""
    if is_torch_tensor(images) or isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    arrays = []
    for im in images:
        arrays.extend(rgb8_images(im, value_range, what))
    if not arrays:
        raise InputError(f"{what}: no images given")
    return [check_rgb8(im, f"{what} {i}" if len(arrays) > 1 else what) for i, im in enumerate(arrays)]


def require_tissue(colors: np.ndarray, weights: np.ndarray | None, what: str,
                   min_fraction: float = MIN_TISSUE_FRACTION, light=None) -> np.ndarray:
    """Tissue mask of ``colors`` (against ``light``, the glass; white by default); raise
    :class:`NoTissueError` when tissue is under ``min_fraction`` of the pixels (an all-white tile has
    nothing to learn from: torchstain #54, StainTools #34)."""
    mask = tissue_mask(colors, light=light)
    w = np.ones(len(colors)) if weights is None else weights
    check_tissue_amount(float(w[mask].sum()), float(w.sum()), what, min_fraction)
    return mask


def check_tissue_amount(tissue: float, total: float, what: str, min_fraction: float = MIN_TISSUE_FRACTION) -> None:
    """:func:`require_tissue`'s rule on counts: :class:`NoTissueError` when ``tissue`` pixels (of
    ``total``) are under ``min_fraction`` of them, or fewer than two."""
    fraction = tissue / max(total, 1.0)
    if fraction < min_fraction:
        raise NoTissueError(f"{what}: no tissue ({100 * fraction:.2f}% of pixels have optical density "
                            f"above {TISSUE_BETA} in any channel; need {100 * min_fraction:.1f}%)")
    if tissue < 2:
        raise NoTissueError(f"{what}: too little to learn from ({tissue:g} tissue pixel; need at least 2)")


def torch_engine_wanted(image, engine: str, has_engine: bool, what: str) -> bool:
    """Whether ``image`` goes through a method's torch engine under ``engine`` (see
    :meth:`Transform.__call__`); :class:`InputError` for an unknown engine, for ``"torch"`` without one,
    and for a tensor that needs a gradient on a path that has none."""
    if engine not in ENGINES:
        raise InputError(f"{what}: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if not is_torch_tensor(image):
        return False
    import torch

    grad = image.requires_grad and torch.is_grad_enabled()
    if not has_engine and (engine == "torch" or grad and engine == "auto"):
        from stainlab.transforms.torch_engine import METHODS

        raise InputError(f"{what} has no torch engine (methods with one: {', '.join(METHODS)}): its path goes "
                         "through NumPy, which has no gradient (pass tensor.detach(), or call inside torch.no_grad())")
    if engine == "torch" or engine == "auto" and has_engine and (grad or image.device.type != "cpu"):
        return True
    if grad:
        raise InputError(f"{what}: the tensor requires grad, but engine='numpy' goes through NumPy and has no "
                         "gradient (pass tensor.detach(), or call inside torch.no_grad())")
    return False


class Transform(ABC):
    """Base class: subclasses set ``name``, take their parameters as keyword arguments of ``__init__``
    (checked there with :mod:`stainlab.transforms.checks`, stored under the same attribute names) and
    implement ``_transform`` (and ``_fit`` plus ``_get_state``/``_set_state`` when they learn from a
    reference; ``_set_state`` checks every stored field, as ``fit`` checks a reference)."""

    name: ClassVar[str] = ""
    requires_fit: ClassVar[bool] = True
    uses_reference: ClassVar[bool] = True  # False: fit() ignores a reference (reference-free or learned methods)
    per_pixel: ClassVar[bool] = False
    deterministic: ClassVar[bool] = True  # False: each call draws new randomness (augmentation)
    needs_weights: ClassVar[bool] = False  # True: the default parameters read a weight file the user supplies
    # Parameters that choose where and in what batches it runs, never its outputs (a network's device):
    # left out of the saved form and the fingerprint, so a run resumed on another device reuses its work.
    run_options: ClassVar[tuple[str, ...]] = ()
    # The outline of a saved transform (depth, sizes, types), which the registry checks before building it.
    check_saved = staticmethod(check_saved)

    def __init__(self) -> None:
        self._fitted = not self.requires_fit

    # -- parameters and state -------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, read back from the attributes of the same names."""
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        sig = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name, p in sig.parameters.items()
                if name != "self" and p.kind in kinds}

    @property
    def fitted(self) -> bool:
        return self._fitted

    def _get_state(self) -> dict[str, Any]:
        """Fitted state as a dict of arrays and numbers (empty for reference-free methods)."""
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_get_state` returned (values arrive as nested lists)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- the face -------------------------------------------------------------------------------
    def fit(self, reference, *, value_range=None) -> "Transform":
        """Learn the target appearance from one image or a list of images (uint8 HxWx3 RGB), or from a
        torch tensor ``(3,H,W)`` / ``(N,3,H,W)`` read as ``t(tensor, value_range=...)`` reads it."""
        self._fit(as_image_list(reference, value_range=value_range))
        self._fitted = True
        return self

    def _fit(self, images: list[np.ndarray]) -> None:
        """Reference-free methods accept and ignore a reference."""

    def __call__(self, image, *, value_range=None, engine: str = "auto"):
        """Transform a uint8 HxWx3 array, or a torch tensor shaped (N,3,H,W) or (3,H,W) into one of the
        same shape, dtype, device and value range.

        Float tensors are read in [0, 1] unless ``value_range`` declares another, e.g. ``(-1, 1)`` or
        ``(0, 255)``; uint8 tensors are 0-255. Two engines:

        - ``"torch"``: methods with a torch engine (Reinhard, Macenko, Ruifrok, the HED augmentation,
          the simplest colour balance) map the whole batch on the tensor's device in its float
          precision, differentiably: gradients flow to the input (:mod:`stainlab.transforms.torch_engine`);
        - ``"numpy"``: each image, rounded to 8 bits, goes through the compiled uint8 path on the CPU
          (the fastest there, :mod:`stainlab.transforms.small`), which has no gradient: a tensor that
          requires grad is refused.

        ``"auto"`` (default) takes the torch engine where it has one and the batch is on an accelerator
        or needs a gradient, and the NumPy path otherwise (a CPU batch under ``torch.no_grad()``, a
        DataLoader worker's). The two agree within a grey level. Channels-last tensors, NaN or infinite
        values, values outside the declared range and meta tensors raise :class:`InputError`; an empty
        batch (N = 0) returns an empty batch. See :mod:`stainlab.io.arrays`.
        """
        engine_fn = self._torch_engine()
        if torch_engine_wanted(image, engine, engine_fn is not None, self.name):
            from stainlab.io.arrays import map_torch

            self._require_fitted()
            return map_torch(engine_fn, image, value_range)
        return map_rgb8(self.transform, image, value_range, threads=self._batch_threads())

    def _batch_threads(self) -> int:
        """Threads for the images of a batch on the NumPy path: one (the method's own code may use
        several); per-pixel methods run a batch's images over numba's threads."""
        return 1

    def _torch_engine(self):
        """The method's torch engine, float (N,3,H,W) in [0, 1] -> the same (its ``_torch``), or None
        where it has none (for these parameters)."""
        return getattr(self, "_torch", None)

    def transform(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 RGB in, uint8 HxWx3 RGB out; the input is never modified."""
        self._require_fitted()
        return self._transform(check_rgb8(image))

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"{self.name}: call fit(reference) first, or load a fitted .json")

    @abstractmethod
    def _transform(self, image: np.ndarray) -> np.ndarray:
        """Map a validated uint8 HxWx3 image."""

    # -- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        state = {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v
                 for k, v in self._get_state().items()} if self._fitted else None
        params = {k: v for k, v in self.get_params().items() if k not in self.run_options}
        return {"format": FORMAT, "version": FORMAT_VERSION, "method": self.name, "params": params, "state": state}

    def fingerprint(self) -> str:
        """A digest of everything the outputs depend on: the saved form (method, parameters but not the
        ``run_options``, fitted state) and the size and modification time of the weight file it reads, if
        any. Two transforms with the same fingerprint give the same outputs, so a batch skips only outputs
        it would repeat."""
        data = self.to_dict()
        model = data["params"].get("model")
        if isinstance(model, str) and Path(model).is_file():
            stat = Path(model).stat()
            data["model_file"] = [stat.st_size, stat.st_mtime_ns]
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def save(self, path) -> None:
        """Write parameters and fitted state as JSON (atomically); ``stainlab.load(path)`` restores it."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))


class PixelTransform(Transform):
    """A transform that is a function of the RGB value once per-image parameters are known.

    Subclasses implement three hooks (and optionally ``_keep``), all on float RGB colours in [0, 255]
    with optional pixel weights (the colour-histogram counts, see :mod:`stainlab.transforms.lut`):

    - ``_fit_colors(colors, weights)``: learn the target from the reference's colours;
    - ``_source(colors, weights)``: per-image parameters of the image being transformed (raise
      :class:`NoTissueError` when it has no tissue: the image is then passed through with a warning);
    - ``_map(colors, source)``: the per-pixel map, float RGB in, float RGB out.

    ``t(image)`` takes one of three paths. Images of up to ``SMALL_IMAGE_PIXELS`` take the small-image
    path (:mod:`stainlab.transforms.small`: compiled statistics and maps). Larger ones map through the
    same compiled per-pixel kernel where the method has one (``kernel_maps``), their statistics from a
    sample; otherwise the per-image parameters come from a sample or the colour histogram, ``_map`` is
    evaluated once per occupied colour cell (``lut_bits`` per channel) and the image is gathered through
    that table. ``t.transform(image, exact=True)`` evaluates ``_map`` on every pixel instead.
    """

    per_pixel = True
    stats_bits: ClassVar[int] = STATS_BITS  # lattice of the per-image statistics (8: exact)
    separable: ClassVar[bool] = False       # True: the map acts on each channel alone, and
    # ``_channel_source(tissue, glass)`` gives the per-image parameters from per-channel distributions
    _EXACT_CHUNK = 1 << 20

    def __init__(self, lut_bits: int = DEFAULT_BITS) -> None:
        super().__init__()
        self.lut_bits = check_int(f"{self.name}: lut_bits", lut_bits, 4, 8)

    def _fit(self, images: list[np.ndarray]) -> None:
        if self._fits_from_sample(images):
            self._adopt(self._sampled_reference(images, f"{self.name} reference"))
            return
        hist = ColorHistogram.merge([ColorHistogram.of(im, 8) for im in images])
        if self.requires_fit:  # reference-optional methods check what they use themselves
            require_tissue(hist.colors, hist.counts, f"{self.name} reference")
        self._fit_colors(hist.colors, hist.counts)

    def _fits_from_sample(self, images: list[np.ndarray]) -> bool:
        """Whether references of more than :data:`~stainlab.transforms.small.LARGE_IMAGE_SAMPLE` pixels in
        all are fitted as a source of their size is analysed (:meth:`_sampled_reference`), by a method that
        maps larger images through its compiled kernel (``kernel_maps``, ``lut_bits`` under 8); smaller
        references, and every reference of the other methods, from every pixel's colour histogram."""
        return (self.requires_fit and self.kernel_maps and self.lut_bits < 8
                and sum(image.shape[0] * image.shape[1] for image in images) > small.LARGE_IMAGE_SAMPLE)

    def _sampled_reference(self, images: list[np.ndarray], what: str) -> Any:
        """The per-image parameters of references taken as a whole slide's are (:meth:`source_of_pixels`
        of an evenly strided sample of ``LARGE_IMAGE_SAMPLE`` of their pixels, compiled passes), with the
        fit's refusals: too little tissue, and a note when the light falls back to white (one reference:
        :meth:`_sampled_source`, as ``t(image)`` takes it). So a reference and the sources normalized to it
        are measured alike (a reference normalized to itself keeps its statistics: Reinhard's map is then
        the identity, Macenko's stain factors are ones), and a large reference costs what a source of its
        size costs: on the 6.6 MPix CMU-1 region Macenko's fit took 8-9 ms against 0.8-1.06 s from the
        colour histogram, its stain rows within 0.22 degree and robust maxima within 0.6% of that fit's
        (Vahadane 0.77 degree and 1.7%; Reinhard 13 ms against 0.75 s, CIELAB means and deviations within
        0.01)."""
        one = len(images) == 1  # its sample a view, as t(image) takes it
        pixels = (small.strided(images[0].reshape(-1, 3), small.LARGE_IMAGE_SAMPLE) if one
                  else small.strided_pixels(images, small.LARGE_IMAGE_SAMPLE).reshape(-1, 3))
        self._refuse_reference(pixels, what)
        try:
            source = self._sampled_source(images[0]) if one else self.source_of_pixels(pixels)
        except InputError as err:  # the source's refusal, said of the reference
            raise type(err)(str(err).replace(f"{self.name} source", what)) from None
        self._note_reference(pixels, source, what)
        return source

    def _refuse_reference(self, pixels: np.ndarray, what: str) -> None:
        """A reference's refusal that its source analysis does not give, on its sampled pixels ``(M, 3)``:
        too little tissue (against white, as :func:`require_tissue`), counted on the strided view in place
        (NumPy's copy of it moves three bytes at a time: Reinhard's fit of the CMU-1 region took 28 ms with
        that copy, 13 without)."""
        tissue = count_below(pixels, tissue_limit(TISSUE_BETA))
        check_tissue_amount(tissue, len(pixels), what)

    def _note_reference(self, pixels: np.ndarray, source: Any, what: str) -> None:
        """Warnings of a reference's fit about its sampled pixels and its statistics ``source``."""

    def _adopt(self, source: Any) -> None:
        """Take a reference's per-image parameters, as :meth:`source_of_pixels` gives them, as the target
        (the methods that :meth:`_fits_from_sample`)."""
        raise NotImplementedError(f"{self.name}: a reference's statistics cannot be adopted as its target")

    def _fit_colors(self, colors: np.ndarray, weights: np.ndarray) -> None:
        """Reference-free methods have nothing to learn."""

    def _source(self, colors: np.ndarray, weights: np.ndarray | None) -> Any:
        """Reference-free, image-independent maps need no per-image parameters."""
        return None

    @abstractmethod
    def _map(self, colors: np.ndarray, source: Any) -> np.ndarray:
        """Float RGB (M, 3) in [0, 255] -> float RGB (M, 3)."""

    def _keep(self, colors: np.ndarray) -> np.ndarray | None:
        """Bool (M,) of colours whose pixels must stay byte-identical (e.g. background of masked
        variants), or None. Decided per lattice cell on the LUT path, per pixel on the exact path."""
        return None

    @property
    def _keep_below(self) -> int:
        """:meth:`_keep` on bytes, for compiled kernels (Reinhard's, the per-channel tables of
        ``separable`` methods): pixels whose darkest channel is at least this keep their bytes (256: none
        do; ``tissue_limit`` of the tissue rule: the glass)."""
        return 256

    def transform(self, image: np.ndarray, exact: bool = False) -> np.ndarray:
        """uint8 HxWx3 in and out; ``exact=True`` skips the lookup table (slower, for checking)."""
        self._require_fitted()
        image = check_rgb8(image)
        return self._transform_exact(image) if exact else self._transform(image)

    def _source_or_none(self, estimate):
        """``(True, estimate())``, or ``(False, None)`` with a warning when the image has no tissue."""
        try:
            return True, estimate()
        except NoTissueError as err:
            warnings.warn(f"{self.name}: {err}; image passed through unchanged", NoTissueWarning, stacklevel=4)
            return False, None

    def source_of(self, hist: ColorHistogram) -> Any:
        """Per-image parameters from the colour histogram of an image (or of a sample of a whole slide),
        taken on the ``stats_bits`` lattice as ``t(image)`` does; raises :class:`NoTissueError`."""
        stats = self._statistics_lattice(hist)
        return self._source(stats.colors, stats.counts)

    def source_of_pixels(self, pixels: np.ndarray) -> Any:
        """Per-image parameters from uint8 pixels ``(M, 3)`` (say, a whole slide's sample), taken as
        ``t(image)`` takes them from an image of that many pixels (up to ``SMALL_IMAGE_PIXELS``: by
        compiled passes over an evenly strided sample where the small-image path applies); raises
        :class:`NoTissueError`."""
        image = np.asarray(pixels).reshape(-1, 1, 3)
        if self._small_path(image):
            return self._small_source(image)
        return self.source_of(ColorHistogram.of(image, self.lut_bits))

    def _small_path(self, image: np.ndarray) -> bool:
        """Whether ``image`` takes the small-image path (:mod:`stainlab.transforms.small`)."""
        return image.shape[0] * image.shape[1] <= small.SMALL_IMAGE_PIXELS and (self.lut_bits < 8 or self.separable)

    @property
    def kernel_maps(self) -> bool:
        """Whether the method maps pixels by a compiled per-pixel kernel (its :meth:`_small_map`) that
        takes the per-image parameters as :meth:`source_of_pixels` gives them. Images too large for the
        small-image path then map through it too, with their statistics from a sample
        (:meth:`_sampled_source`) and no colour lattice (unless ``lut_bits`` is 8, an exact table): on
        the 6.6 MPix CMU-1 region Macenko took 12 ms against 71 through the lookup table and landed
        nearer the exact path (mean CIEDE2000 0.041 against 0.072); Ruifrok 12 against 107, linear-ot
        11 against 55, Vahadane 37 against 129, Reinhard 43 against 69."""
        return False

    def _sampled_source(self, image: np.ndarray) -> Any:
        """Per-image parameters of an image too large for the small-image path: from an evenly strided
        sample of :data:`~stainlab.transforms.small.LARGE_IMAGE_SAMPLE` of its pixels as from a small
        image (:meth:`source_of_pixels`: compiled passes, a slide's statistics alike)."""
        return self.source_of_pixels(small.strided(image.reshape(-1, 3), small.LARGE_IMAGE_SAMPLE))

    def _large_source(self, image: np.ndarray, hist: ColorHistogram) -> Any:
        """Per-image parameters of an image mapped through its lookup table: from a sample
        (:meth:`_sampled_source`; Macenko on the CMU-1 region took 0.10 s whole against 0.13-0.14 with
        the statistics from its colour histogram), except with ``lut_bits`` 8, whose histogram holds
        them exactly (per-channel methods never come here: :meth:`_transform`)."""
        if self.lut_bits == 8:
            return self.source_of(hist)
        return self._sampled_source(image)

    def _statistics_lattice(self, hist: ColorHistogram) -> ColorHistogram:
        """``hist`` coarsened to ``stats_bits``, where per-image statistics are taken (8 bits: all exact)."""
        return hist if self.lut_bits == 8 else hist.coarsened(self.stats_bits)

    def _batch_threads(self) -> int:
        import numba

        return numba.get_num_threads()

    def linear_od_map(self, source: Any):
        """The map under ``source`` as one matrix in optical density
        (:class:`~stainlab.color.od.LinearODMap`) when it is one, else None: whole-slide colour tables
        then fill their cells by one compiled pass (:class:`~stainlab.transforms.lut.LatticeTable`)."""
        return None

    def color_table(self, colors: np.ndarray, source: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows of a lookup table: the uint8 outputs of float ``colors`` under ``source``, and which
        colours keep their input bytes (or None)."""
        return to_uint8(self._map(colors, source)), self._keep(colors)

    def _transform(self, image: np.ndarray) -> np.ndarray:
        if self._small_path(image) or self.separable:  # separable: counts and three exact tables, at any size
            estimate = self._small_source
        elif self.kernel_maps and self.lut_bits < 8:
            estimate = self._sampled_source
        else:
            estimate = None
        if estimate is not None:
            ok, source = self._source_or_none(lambda: estimate(image))
            return self._small_map(image, source) if ok else image.copy()
        hist = ColorHistogram.of(image, self.lut_bits)
        ok, source = self._source_or_none(lambda: self._large_source(image, hist))
        if not ok:
            return image.copy()
        return apply_table(image, hist, *self.color_table(hist.colors, source))

    # -- the small-image path (:mod:`stainlab.transforms.small`) ------------------------------------
    def _small_source(self, image: np.ndarray) -> Any:
        """Per-image parameters of a small image: from a sample's colour histogram at ``stats_bits``
        (every pixel's when ``lut_bits`` is 8: exact); methods with compiled statistics override it.
        ``separable`` methods, at any size: from the per-level counts of each channel of every pixel
        (:mod:`stainlab.transforms.channels`; one compiled pass, the colour histogram's distributions
        exactly, so that all three equal the exact path byte for byte; on the 6.6 MPix CMU-1 region
        histogram matching took 15 ms against 550 through the lookup table, colour balance 12 against 290)."""
        if self.separable:
            return self._channel_source(*split_pixels(image.reshape(-1, 3)))
        return small.histogram_source(self, image, sample=self.lut_bits < 8)

    def _small_map(self, image: np.ndarray, source: Any) -> np.ndarray:
        """The map on a small image: three exact tables when ``separable``, else tetrahedral
        interpolation between the corners of the occupied cells. Methods with a compiled per-pixel
        kernel override it."""
        if self.separable:
            return small.channel_tables(self, image, source)
        return small.interpolated(self, image, source)

    def _transform_exact(self, image: np.ndarray) -> np.ndarray:
        pixels = image.reshape(-1, 3)
        ok, source = self._source_or_none(lambda: self._source(pixels.astype(np.float64), None))
        if not ok:
            return image.copy()
        out = np.empty_like(pixels)
        for start in range(0, len(pixels), self._EXACT_CHUNK):
            stop = start + self._EXACT_CHUNK
            chunk = pixels[start:stop].astype(np.float64)
            out[start:stop] = to_uint8(self._map(chunk, source))
            keep = self._keep(chunk)
            if keep is not None:
                out[start:stop][keep] = pixels[start:stop][keep]
        return out.reshape(image.shape)


class MaskedGlass:
    """The ``mask`` option of a :class:`PixelTransform` (Reinhard, histogram matching): masked, the pixels
    that are not tissue under the tissue rule (glass) keep their bytes, judged per colour on the table
    and exact paths (:meth:`_keep`) and per byte in compiled kernels (:meth:`_keep_below`); unmasked,
    none do."""

    mask: bool

    def _keep(self, colors):
        return ~tissue_mask(colors) if self.mask else None

    @property
    def _keep_below(self) -> int:
        return tissue_limit(TISSUE_BETA) if self.mask else 256
