"""The torch engine: Reinhard, Macenko, Ruifrok, the HED augmentation and the simplest colour balance on
float ``(N, 3, H, W)`` batches in [0, 1], on the batch's device, differentiable with respect to it.

``t(tensor)`` lands here for the methods that have an engine when the batch lives on an accelerator or
needs a gradient, or with ``engine="torch"`` (``Transform.__call__``; a CPU batch without gradient
takes the faster compiled uint8 path of :mod:`stainlab.transforms.small`; conversions in
:mod:`stainlab.io.arrays`); each function below is also usable on its own. They compute, per image and
for the whole batch at once, exactly what the NumPy exact path ``t.transform(image, exact=True)``
computes: the same statistics over the same pixels, the same guards, the same rendering (differences
are float32 rounding and, for uint8 data, the final rounding; the tests hold them under a mean CIEDE2000
of 0.5). The statistics are part of the graph: gradients reach the input through the per-image means,
covariances, eigenvectors (``torch.linalg.eigh``, differentiable while the eigenvalues are distinct)
and percentiles (the two order statistics each one interpolates).

Light (:mod:`stainlab.transforms.lighting`): the stain methods and the augmentation take optical density
against each image's light, by the transform's ``light`` option (``"estimate"``: the glass of each image,
:func:`stainlab.color.torch_color.estimate_light`, batched, from the 8-bit levels the NumPy path sees,
so the same light, without gradient; ``"fixed"``: white; an RGB triple), and the stain methods render
under the reference's (``target_light``), as the NumPy paths do.

Per-image failures behave as on the NumPy path, without a Python loop over images: an image with too
little tissue (``MIN_TISSUE_FRACTION``), a flat colour channel, a degenerate optical-density plane or
stains under ``MIN_STAIN_ANGLE`` apart is flagged, the flag selects its input unchanged
(``torch.where``), and the caller warns once per batch with the number passed through
(:func:`warn_passed`). Flagged images get well-conditioned stand-ins for their statistics, so no NaN or
infinity reaches a gradient through the unselected side.

The guards' thresholds belong to the method modules (``base.MIN_TISSUE_FRACTION``, ``reinhard.MIN_STD``,
``stain_matrix.MIN_STAIN_ANGLE`` ...), which import this module, so they pass them in as keyword
arguments: imports go one way.

Vahadane stays NumPy-only: its sparse dictionary learning is an iterative per-image optimisation that a
batch does not speed up; a Vahadane transform takes a tensor through the NumPy path.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from stainlab.color import torch_color as tc
from stainlab.color.light import WHITE
from stainlab.color.stains import EOSIN, HEMATOXYLIN, normalize_rows
from stainlab.color.tissue import TISSUE_BETA
from stainlab.errors import NoTissueWarning
from stainlab.transforms.checks import MIN_SPREAD

METHODS = ("augment", "colorbalance", "macenko", "reinhard", "ruifrok")
"""The methods whose transforms have a torch engine (``_torch``); the others take tensors through NumPy."""
_H_E_REFERENCE = normalize_rows(np.array([HEMATOXYLIN, EOSIN]))   # color.stains.order_like's default
_STAND_IN_COVARIANCE = np.diag([1.0, 2.0, 3.0])                    # distinct eigenvalues, for flagged images
_TINY = 1e-30


class Stains(NamedTuple):
    """Scaled stain concentrations of a batch and how to render them: ``OD = conc @ matrix``."""

    conc: torch.Tensor      # (N, k, M) concentrations, each stain scaled to the target's robust maximum
    matrix: torch.Tensor    # (k, 3) the target's stain rows (Ruifrok: the fixed basis, residual included)
    ok: torch.Tensor        # (N,) bool: False for images passed through unchanged
    light: torch.Tensor     # (3,) the target's light (0-255 units), which the stains are rendered under


def warn_passed(name: str, ok: torch.Tensor, stacklevel: int = 4) -> None:
    """One :class:`NoTissueWarning` naming how many images of the batch were passed through."""
    passed = int((~ok).sum())
    if passed:
        warnings.warn(f"{name}: {passed} of {len(ok)} images of the batch have no tissue, a flat colour or "
                      "inseparable stains; passed through unchanged", NoTissueWarning, stacklevel=stacklevel)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], 3, -1)


def _const(value, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=like.dtype, device=like.device)


def image_lights(x: torch.Tensor, light) -> torch.Tensor:
    """Each image's light ``(N, 3)`` (0-255 units) of ``(N, 3, M)`` RGB in [0, 1] by a ``light`` option as
    :func:`stainlab.transforms.lighting.check_light` stores it: estimated from each image's glass, white,
    or the given RGB for all."""
    if isinstance(light, str) and light == "estimate":
        return tc.estimate_light(x).rgb
    return _const(WHITE if isinstance(light, str) else light, x).expand(x.shape[0], 3)


def _tissue(od: torch.Tensor, beta: float, min_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Tissue mask ``(N, M)`` and the flags of ``base.require_tissue`` (at least ``min_fraction`` of the
    pixels and 2 of them) with ``stain_matrix.tissue_od``'s own ``beta`` rule."""
    mask = tc.tissue_mask(od)
    count = mask.sum(dim=-1)
    ok = (count >= min_fraction * od.shape[-1]) & (count >= 2)
    if beta != TISSUE_BETA:
        mask = tc.tissue_mask(od, beta)
        ok &= mask.sum(dim=-1) >= 2
    return mask, ok


def _spread_ok(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``checks.require_color_spread``: every channel's standard deviation (0-255 units) is ``MIN_SPREAD``
    or more."""
    return (tc.masked_mean_std(x.detach() * 255.0, mask)[1] >= MIN_SPREAD).all(dim=-1)


def scale_factors(source_max: torch.Tensor, target_max: torch.Tensor, minimum: float) -> torch.Tensor:
    """``stain_matrix.scale_factors`` on ``(N, k)``: target over source maximum, 1 for a stain whose
    maximum is under ``minimum`` (absent)."""
    present = (source_max >= minimum) & (target_max >= minimum)
    return torch.where(present, target_max / torch.where(present, source_max, torch.ones_like(source_max)),
                       torch.ones_like(source_max))


def render(x: torch.Tensor, stains: Stains) -> torch.Tensor:
    """The normalized batch ``(N, 3, H, W)``: Beer-Lambert with the target rows under the target's light
    ``L`` (Macenko et al. 2009 with ``L = 255``: ``I = (L + 1) exp(-C W_ref) - 1``); flagged images are
    their input."""
    out = tc.od_to_rgb(tc.channel_matrix(stains.conc, stains.matrix), stains.light).view_as(x)
    return torch.where(stains.ok.view(-1, 1, 1, 1), out, x)


def normalized(name: str, x: torch.Tensor, stains: Stains) -> torch.Tensor:
    """:func:`render` after one warning for the images passed through: a stain method's ``_torch``."""
    warn_passed(name, stains.ok, stacklevel=5)
    return render(x, stains)


def separated(x: torch.Tensor, stains: Stains) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalized batch, the first and the second stain each rendered alone with its target row under
    the target's light (``(N, 3, H, W)`` in [0, 1]), and those two scaled concentrations ``(N, 2, H, W)``
    (0 on images passed through, whose renderings are white, as on the NumPy path)."""
    ok = stains.ok.view(-1, 1, 1)
    conc = torch.where(ok, stains.conc, torch.zeros_like(stains.conc))
    alone = [torch.where(ok, tc.od_to_rgb(conc[:, i:i + 1] * stains.matrix[i][:, None], stains.light), 1.0)
             for i in range(2)]
    return render(x, stains), *(a.view_as(x) for a in alone), conc[:, :2].reshape(x.shape[0], 2, *x.shape[2:])


# -- Reinhard ---------------------------------------------------------------------------------------
def reinhard(x: torch.Tensor, target_mean, target_std, mask: bool = False, *, min_tissue_fraction: float,
             min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reinhard et al. 2001 (Eq. 10-11) in CIELAB: each channel standardised per image and given the
    target's mean and standard deviation; ``mask``: statistics over tissue only and background pixels
    kept as they were; a channel whose spread is under ``min_std`` passes the image through. Returns the
    batch and the per-image flags (False: passed through)."""
    flat = _flat(x)
    lab = tc.rgb_to_lab(flat)
    tissue, ok = _tissue(tc.rgb_to_od(flat), TISSUE_BETA, min_tissue_fraction) if mask else (None, torch.ones_like(flat[:, 0, 0], dtype=torch.bool))
    ok &= _spread_ok(flat, tissue)
    mean, std = tc.masked_mean_std(lab, tissue)
    ok &= (std.detach() >= min_std).all(dim=-1)
    std = torch.where(ok[:, None], std, torch.ones_like(std))
    out = tc.lab_to_rgb((lab - mean[..., None]) / std[..., None] * _const(target_std, x)[:, None]
                        + _const(target_mean, x)[:, None])
    if mask:
        out = torch.where(tissue[:, None], out, flat)
    return torch.where(ok.view(-1, 1, 1), out, flat).view_as(x), ok


# -- Macenko ----------------------------------------------------------------------------------------
def _order_like(rows: torch.Tensor) -> torch.Tensor:
    """``color.stains.order_like`` per image: H first when that assignment is nearer the reference."""
    ref = _const(_H_E_REFERENCE, rows)
    keep = rows[:, 0] @ ref[0] + rows[:, 1] @ ref[1]
    swap = rows[:, 1] @ ref[0] + rows[:, 0] @ ref[1]
    return torch.where((keep >= swap).view(-1, 1, 1), rows, rows.flip(1))


def macenko_stain_matrix(od: torch.Tensor, tissue: torch.Tensor, ok: torch.Tensor, alpha: float, *,
                         min_plane_variance: float, min_stain_angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 3-8 of Macenko et al. 2009 per image, as ``macenko.macenko_stain_matrix``: the plane of the
    two largest eigenvectors of the tissue OD covariance, angles from the mean OD direction, the
    ``alpha`` / ``100 - alpha`` percentile angles back to unit rows, ordered H then E. Returns ``(N, 2, 3)``
    rows and the flags with the plane and separability guards added."""
    w = tissue.to(od.dtype)[:, None]
    total = w.sum(dim=-1).clamp(min=1.0)
    mean = (od * w).sum(dim=-1) / total
    cov = torch.einsum("ncm,ndm->ncd", od * w, od) / total[..., None] - mean[:, :, None] * mean[:, None, :]
    with torch.no_grad():
        ok = ok & (torch.linalg.eigvalsh(cov)[:, 1] > min_plane_variance)
    cov = torch.where(ok.view(-1, 1, 1), cov, _const(_STAND_IN_COVARIANCE, od))
    normal = torch.linalg.eigh(cov)[1][..., 0]                 # eigenvector of the smallest eigenvalue
    axis = mean - (mean * normal).sum(dim=-1, keepdim=True) * normal
    length = (axis ** 2).sum(dim=-1).clamp(min=_TINY).sqrt()
    ok = ok & (length.detach() >= 1e-9)
    e1 = axis / length[:, None]
    e2 = torch.linalg.cross(normal, e1)
    u, v = torch.einsum("ncm,nc->nm", od, e1), torch.einsum("ncm,nc->nm", od, e2)
    phi = torch.atan2(torch.where(tissue, v, 0.0), torch.where(tissue, u, 1.0))   # (0, 0) has no gradient
    angles = torch.stack([tc.masked_percentile(phi, tissue, alpha),
                          tc.masked_percentile(phi, tissue, 100.0 - alpha)], dim=1)
    rows = _order_like(angles.cos()[..., None] * e1[:, None] + angles.sin()[..., None] * e2[:, None])
    ok = ok & ((rows[:, 0] * rows[:, 1]).sum(dim=-1).detach() <= math.cos(math.radians(min_stain_angle)))
    return rows, ok


def macenko_stains(x: torch.Tensor, target_rows, target_max, alpha: float = 1.0, beta: float = TISSUE_BETA,
                   percentile: float = 99.0, rescale: bool = True, *, light, target_light, min_tissue_fraction: float,
                   min_plane_variance: float, min_stain_angle: float, min_max_concentration: float) -> Stains:
    """Macenko et al. 2009 normalization up to rendering, as ``StainMatrixTransform._analyse`` and
    ``Macenko._map``: optical density against each image's light (the ``light`` option, see
    :func:`image_lights`), concentrations by least squares ``C = OD W^+`` (``W^+ = W^T (W W^T)^-1``), scaled
    per stain by the target's over the image's ``percentile`` robust maximum (``rescale=False``: 1), to be
    rendered under ``target_light``."""
    flat = _flat(x)
    od = tc.rgb_to_od(flat, image_lights(flat, light))
    tissue, ok = _tissue(od, beta, min_tissue_fraction)
    ok = ok & _spread_ok(flat, None)
    rows, ok = macenko_stain_matrix(od, tissue, ok, alpha, min_plane_variance=min_plane_variance,
                                    min_stain_angle=min_stain_angle)
    target_rows = _const(target_rows, x)
    rows = torch.where(ok.view(-1, 1, 1), rows, target_rows)  # a well-conditioned stand-in when flagged
    pinv = rows.mT @ torch.linalg.inv(rows @ rows.mT)
    conc = tc.channel_matrix(od, pinv)
    if rescale:
        maxima = tc.masked_percentile(conc, tissue, percentile)
        conc = conc * scale_factors(maxima, _const(target_max, x), min_max_concentration)[..., None]
    return Stains(conc, target_rows, ok, _const(target_light, x))


# -- Ruifrok ----------------------------------------------------------------------------------------
def ruifrok_stains(x: torch.Tensor, basis, target_max=None, channel: int | None = None, beta: float = TISSUE_BETA,
                   percentile: float = 99.0, *, light, target_light, min_tissue_fraction: float,
                   min_max_concentration: float) -> Stains:
    """Ruifrok & Johnston 2001: concentrations ``C = OD M^-1`` of the fixed basis, optical density against
    each image's light (the ``light`` option, see :func:`image_lights`); either each stain scaled to the
    target's ``percentile`` robust maximum (residual kept), or ``channel`` alone (paper 002's
    ``T^-1([v_H, 0, 0])``, nothing estimated); to be rendered under ``target_light``."""
    flat = _flat(x)
    od = tc.rgb_to_od(flat, image_lights(flat, light))
    conc = tc.channel_matrix(od, basis.inverse)
    matrix, target_light = _const(basis.matrix, x), _const(target_light, x)
    if channel is not None:
        factors = torch.zeros(3, dtype=x.dtype, device=x.device)
        factors[channel] = 1.0
        return Stains(conc * factors[:, None], matrix, torch.ones_like(flat[:, 0, 0], dtype=torch.bool), target_light)
    n = len(basis.stains)
    tissue, ok = _tissue(od, beta, min_tissue_fraction)
    ok = ok & _spread_ok(flat, None)
    maxima = tc.masked_percentile(conc[:, :n], tissue, percentile)
    factors = scale_factors(maxima, _const(target_max, x), min_max_concentration)
    factors = torch.cat([factors, torch.ones_like(conc[:, n:, 0])], dim=1)
    return Stains(conc * factors[..., None], matrix, ok, target_light)


# -- HED augmentation -------------------------------------------------------------------------------
def augment_draws(n_images: int, n_stains: int, sigma1: float, sigma2: float,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and stain ``alpha ~ U(1 - sigma1, 1 + sigma1)`` and ``beta ~ U(-sigma2, sigma2)``
    (Tellez et al. 2018), ``(N, 3)`` float64 on the CPU; the residual of a two-stain set keeps 1 and 0.
    Drawn on the CPU from ``generator`` so that a seed gives the same jitter on every device."""
    u = torch.rand(2, n_images, n_stains, generator=generator, dtype=torch.float64)
    alpha, beta = torch.ones(n_images, 3, dtype=torch.float64), torch.zeros(n_images, 3, dtype=torch.float64)
    alpha[:, :n_stains] = 1.0 - sigma1 + 2.0 * sigma1 * u[0]
    beta[:, :n_stains] = sigma2 * (2.0 * u[1] - 1.0)
    return alpha, beta


def augment(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, basis, light="estimate") -> torch.Tensor:
    """The jitter of :mod:`stainlab.transforms.augment` with given draws ``(N, 3)``:
    ``OD' = OD M^-1 diag(alpha) M + fade * beta M``, the shift faded out on glass by the largest channel OD
    (full weight from ``TISSUE_BETA``, none below half of it); optical density against each image's light
    (the ``light`` option, see :func:`image_lights`), unclipped so that no jitter is the identity, and
    rendered back under the same light."""
    flat = _flat(x)
    lights = image_lights(flat, light)
    od = tc.rgb_to_od(flat, lights, clip=False)
    alpha, beta = alpha.to(x.device, x.dtype), beta.to(x.device, x.dtype)
    matrix = _const(basis.matrix, x)
    scale = (_const(basis.inverse, x)[None] * alpha[:, None, :]) @ matrix
    fade = torch.clamp(2.0 * od.amax(dim=1) / TISSUE_BETA - 1.0, 0.0, 1.0)
    jittered = tc.channel_matrix(od, scale) + fade[:, None] * (beta @ matrix)[..., None]
    return tc.od_to_rgb(jittered, lights).view_as(x)


# -- simplest colour balance ------------------------------------------------------------------------
def color_balance(x: torch.Tensor, s1: float, s2: float) -> torch.Tensor:
    """Limare et al. 2011 per image and channel: ``lo`` the smallest value with more than ``s1`` % of the
    pixels at or below it, ``hi`` the smallest with at least ``100 - s2`` % at or below it (the rule of
    ``colorbalance.saturation_bounds``, as order statistics), ``(x - lo) / (hi - lo)`` clipped to [0, 1];
    a channel with ``hi <= lo`` is left as it is."""
    flat = _flat(x)
    m = flat.shape[-1]
    k_lo = min(math.floor(m * s1 / 100.0), m - 1)                        # 0-based rank of lo
    k_hi = min(max(math.ceil(m * (1.0 - s2 / 100.0)) - 1, 0), m - 1)    # ... and of hi
    lo = torch.topk(flat, k_lo + 1, dim=-1, largest=False).values[..., -1]
    hi = torch.topk(flat, m - k_hi, dim=-1, largest=True).values[..., -1]
    flat_channel = hi <= lo
    lo = torch.where(flat_channel, torch.zeros_like(lo), lo)
    span = torch.where(flat_channel, torch.ones_like(hi), hi - lo)
    return torch.clamp((flat - lo[..., None]) / span[..., None], 0.0, 1.0).view_as(x)
