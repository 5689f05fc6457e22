"""PatchMatch nearest-neighbour fields between two feature maps, in both directions.

Paper 001, Sec. 2.2.1 and Algorithm 2 lines 8-9 (after He et al. 2019, "Progressive color transfer with
dense semantic correspondences", Sec. 4.1), with the search of Barnes et al. 2009 ("PatchMatch: a
randomized correspondence algorithm for structural image editing", Sec. 3.1-3.2): random
initialisation, then iterations that alternate a forward and a backward scan; each pixel tries its
scan-order neighbours' matches shifted by one pixel (propagation) and random candidates in windows that
halve around its best match (random search, alpha = 1/2). The scan is sequential by design (each
pixel uses the matches its predecessors just improved), so it is compiled with numba rather than
vectorised; one scan of a 500x500 map costs tens of milliseconds. The two directions run in two
threads, and each starts from the field of a half-resolution search (:func:`pyramid_field`), so that
two iterations at full resolution replace five (2.8x faster on 500x500, the same fraction of exact
matches in ``tests/test_nct_parts.py``'s set-ups).

Patch distance. Instead of comparing ``p x p x C`` feature patches directly, each patch is projected on
the top ``dims`` principal components of the patch vectors of both images (one joint basis, computed on
a seeded sample of patches and applied to every pixel as a ``p x p`` convolution). The squared distance
between projected patches is the patch SSD minus the energy outside those components; with 16 of the
576-640 dimensions it keeps most of the variance of the standardised features, and each candidate costs
16 products instead of 600 (the same idea as PCA-projected patches in TreeCANN and Coherency Sensitive
Hashing). ``dims=None`` keeps the full patch vector (exact SSD, for checking).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

_PCA_SAMPLES = 8192


def patch_descriptors(source: np.ndarray, reference: np.ndarray, patch: int = 3, dims: int | None = 16,
                      seed: int = 0, pixel_dims: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors (h, w, D) float32 of the ``patch x patch`` patches of two feature maps (h, w, C)
    (edges replicated), projected on a joint PCA basis of ``dims`` components (``None``: all).

    ``pixel_dims``: first project each pixel's features on their top principal components (a cheap
    first stage that makes the patch projection ``C / pixel_dims`` times cheaper)."""
    if pixel_dims is not None and pixel_dims < source.shape[2]:
        source, reference = _pixel_pca(source, reference, pixel_dims, seed)
    channels = source.shape[2]
    full = channels * patch * patch
    if dims is None or dims >= full:
        basis = np.eye(full, dtype=np.float32)
    else:
        basis = _patch_basis(source, reference, patch, dims, seed)
    kernel = torch.from_numpy(np.ascontiguousarray(basis.T)).reshape(-1, channels, patch, patch)
    return _project(source, kernel, patch), _project(reference, kernel, patch)


def _pixel_pca(source, reference, dims, seed):
    """Both maps projected on the top ``dims`` principal components of their pooled pixels."""
    rng = np.random.default_rng(seed)
    flat = [f.reshape(-1, f.shape[2]) for f in (source, reference)]
    samples = np.concatenate([f[rng.integers(0, len(f), _PCA_SAMPLES // 2)] for f in flat])
    basis = torch.from_numpy(_principal_directions(samples, dims))
    return tuple(np.ascontiguousarray((torch.from_numpy(f) @ basis).numpy().reshape(m.shape[:2] + (dims,)))
                 for f, m in zip(flat, (source, reference)))


def _patch_basis(source, reference, patch, dims, seed) -> np.ndarray:
    """(C*patch*patch, dims) principal directions of patch vectors sampled from both maps."""
    rng = np.random.default_rng(seed)
    samples = np.concatenate([_sample_patches(f, patch, _PCA_SAMPLES // 2, rng) for f in (source, reference)])
    return _principal_directions(samples, dims)


def _principal_directions(samples: np.ndarray, dims: int) -> np.ndarray:
    """(D, dims) float32: the top principal directions of (n, D) samples. Computed with torch on one
    thread: this 100x100 problem gains nothing from threads, and a multi-threaded BLAS on a busy CPU
    can take a hundred times longer than one thread (measured here: 0.6 s against 4 ms)."""
    x = torch.from_numpy(np.asarray(samples, dtype=np.float64))
    x = x - x.mean(dim=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, vectors = torch.linalg.eigh(x.T @ x)
    finally:
        torch.set_num_threads(threads)
    return vectors.flip(1)[:, :dims].numpy().astype(np.float32)


def _sample_patches(features: np.ndarray, patch: int, count: int, rng) -> np.ndarray:
    """(count, C*patch*patch) patch vectors at random centres, ordered (channel, dy, dx) like a conv kernel."""
    h, w, _ = features.shape
    r = patch // 2
    padded = np.pad(features, ((r, r), (r, r), (0, 0)), mode="edge")
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    offsets = np.arange(patch)
    rows = padded[(ys[:, None, None] + offsets[None, :, None]), (xs[:, None, None] + offsets[None, None, :])]
    return rows.transpose(0, 3, 1, 2).reshape(count, -1).astype(np.float64)


def _project(features: np.ndarray, kernel: torch.Tensor, patch: int) -> np.ndarray:
    r = patch // 2
    x = torch.from_numpy(np.ascontiguousarray(features.transpose(2, 0, 1), dtype=np.float32))[None]
    with torch.no_grad():
        x = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
        out = torch.nn.functional.conv2d(x, kernel)
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())


def nearest_neighbour_field(source: np.ndarray, reference: np.ndarray, iterations: int = 5,
                            seed: int = 0, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel of ``source`` (h, w, D) its best match in ``reference`` (h2, w2, D).

    Returns ``nnf`` (h, w, 2) int32 of (row, column) in the reference and ``distance`` (h, w) float32,
    the squared descriptor distance of each match. ``start``: an initial field (h, w, 2) instead of the
    random one. Deterministic for a given ``seed``.
    """
    source = np.ascontiguousarray(source, dtype=np.float32)
    reference = np.ascontiguousarray(reference, dtype=np.float32)
    if source.ndim != 3 or reference.ndim != 3 or source.shape[2] != reference.shape[2]:
        raise ValueError(f"descriptor maps must be (h, w, D) with the same D, got {source.shape} and {reference.shape}")
    h, w = source.shape[:2]
    nnf = np.empty((h, w, 2), dtype=np.int32)
    if start is not None:
        nnf[...] = np.clip(start, 0, np.array(reference.shape[:2]) - 1)
    distance = np.empty((h, w), dtype=np.float32)
    _patchmatch(source, reference, nnf, distance, int(iterations), int(seed) % (2 ** 32), start is not None)
    return nnf, distance


def pyramid_field(source: np.ndarray, reference: np.ndarray, iterations: int = 5, seed: int = 0,
                  fine_iterations: int = 2, coarsest: int = 64) -> np.ndarray:
    """Coarse-to-fine PatchMatch: the field of the 2x2-averaged descriptors, doubled, starts the search
    at full resolution, which then needs ``fine_iterations`` instead of ``iterations`` (Barnes et al.
    2009, Sec. 3.2, use the same multi-scale initialisation)."""
    if min(source.shape[:2] + reference.shape[:2]) < 2 * coarsest:
        return nearest_neighbour_field(source, reference, iterations, seed)[0]
    coarse = pyramid_field(_half(source), _half(reference), iterations, seed, fine_iterations, coarsest)
    h, w = source.shape[:2]
    rows, cols = np.minimum(np.arange(h) // 2, coarse.shape[0] - 1), np.minimum(np.arange(w) // 2, coarse.shape[1] - 1)
    start = 2 * coarse[rows[:, None], cols[None, :]] + np.stack(np.mgrid[0:h, 0:w] % 2, axis=-1)
    return nearest_neighbour_field(source, reference, fine_iterations, seed, start)[0]


def _half(descriptors: np.ndarray) -> np.ndarray:
    """2x2 average (odd last row/column dropped)."""
    h, w = descriptors.shape[0] // 2 * 2, descriptors.shape[1] // 2 * 2
    d = descriptors[:h, :w]
    return 0.25 * (d[0::2, 0::2] + d[1::2, 0::2] + d[0::2, 1::2] + d[1::2, 1::2])


def bidirectional_fields(source: np.ndarray, reference: np.ndarray, iterations: int = 5, seed: int = 0,
                         fine_iterations: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The two fields of Algorithm 2 (lines 8-9), source -> reference and reference -> source, each by
    :func:`pyramid_field`."""
    with ThreadPoolExecutor(max_workers=2) as pool:  # the compiled search releases the GIL
        forward = pool.submit(pyramid_field, source, reference, iterations, seed, fine_iterations)
        backward = pool.submit(pyramid_field, reference, source, iterations, seed + 1, fine_iterations)
        return forward.result(), backward.result()


@njit(cache=True, nogil=True)
def _distance(a, ay, ax, b, by, bx, bound):  # pragma: no cover - compiled
    """Squared distance of two descriptors, abandoned (returning a value >= bound) once past ``bound``."""
    total = 0.0
    for k in range(a.shape[2]):
        d = a[ay, ax, k] - b[by, bx, k]
        total += d * d
        if total >= bound:
            return total
    return total


@njit(cache=True, nogil=True)
def _patchmatch(src, ref, nnf, dist, iterations, seed, given):  # pragma: no cover - compiled
    np.random.seed(seed)
    h, w = src.shape[0], src.shape[1]
    h2, w2 = ref.shape[0], ref.shape[1]
    for y in range(h):
        for x in range(w):
            if not given:
                nnf[y, x, 0], nnf[y, x, 1] = np.random.randint(0, h2), np.random.randint(0, w2)
            dist[y, x] = _distance(src, y, x, ref, nnf[y, x, 0], nnf[y, x, 1], np.inf)
    radius0 = max(h2, w2)
    for it in range(iterations):
        step = 1 if it % 2 == 0 else -1
        ys = range(h) if step == 1 else range(h - 1, -1, -1)
        for y in ys:
            xs = range(w) if step == 1 else range(w - 1, -1, -1)
            for x in xs:
                best_y, best_x, best = nnf[y, x, 0], nnf[y, x, 1], dist[y, x]
                # propagation: the previous pixel in scan order (left/right, then up/down) shifted by one
                for ny, nx in ((y, x - step), (y - step, x)):
                    if 0 <= ny < h and 0 <= nx < w:
                        cy, cx = nnf[ny, nx, 0] + (y - ny), nnf[ny, nx, 1] + (x - nx)
                        if 0 <= cy < h2 and 0 <= cx < w2 and (cy != best_y or cx != best_x):
                            d = _distance(src, y, x, ref, cy, cx, best)
                            if d < best:
                                best_y, best_x, best = cy, cx, d
                # random search in windows halving around the best match
                radius = radius0
                while radius >= 1:
                    lo_y, hi_y = max(best_y - radius, 0), min(best_y + radius + 1, h2)
                    lo_x, hi_x = max(best_x - radius, 0), min(best_x + radius + 1, w2)
                    cy, cx = np.random.randint(lo_y, hi_y), np.random.randint(lo_x, hi_x)
                    if cy != best_y or cx != best_x:
                        d = _distance(src, y, x, ref, cy, cx, best)
                        if d < best:
                            best_y, best_x, best = cy, cx, d
                    radius //= 2
                nnf[y, x, 0], nnf[y, x, 1], dist[y, x] = best_y, best_x, best
