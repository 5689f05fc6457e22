"""Metrics on the features of a network: FID and the perceptual hash of paper 003.

FID (Heusel et al., NeurIPS 2017, Eq. 6) is :func:`stainlab.metrics.frechet_distance` of the features of
two image sets. By default the features are the 2048-d pool features of pytorch-fid's InceptionV3
(:func:`stainlab.nets.fid_inception_v3`), which needs the published weight file on disk; without it the
error names the file and where it comes from. Any other extractor is an explicit choice: a network
module or a callable. Nothing falls back silently.

The perceptual hash follows Liu et al., "Virtual Ki-67 staining with an improved Cycle-GAN" (paper 003,
Sec. 5.2): an image is represented by the channel means of ResNet18's second stage (``layer2``, 128
channels), and the perceptual-hash rule (Weng & Preneel 2011, their ref. [17]) turns that vector into
bits: a bit is set where a channel mean is above the median of the means. Two images are compared by
the fraction of equal bits (1 = same hash), the "P-hash" score of their Table 1.
"""

from __future__ import annotations

import numpy as np

from stainlab.errors import InputError
from stainlab.io.arrays import check_rgb8
from stainlab.metrics.frechet import frechet_distance

_HASH_STAGE = "layer2"  # paper 003, Sec. 5.2: "the second layer of resnet18"


def _image_list(images, what: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return [check_rgb8(images, what)]
    items = list(images)
    if not items:
        raise InputError(f"{what}: no images")
    return [check_rgb8(image, f"{what}[{index}]") for index, image in enumerate(items)]


def _stack(batch: list[np.ndarray], what: str) -> np.ndarray:
    shapes = {image.shape for image in batch}
    if len(shapes) > 1:
        raise InputError(f"{what}: images in one batch must share a size, got {sorted(shapes)}; "
                         "crop or tile them to one size first")
    return np.stack(batch)


def _is_module(obj) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


def _as_input(batch: np.ndarray, network):
    """uint8 ``(n, H, W, 3)`` -> float ``(n, 3, H, W)`` in [0, 1] on the network's device."""
    import torch

    device = next(network.parameters()).device
    return torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255


def _run_network(network, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return network(_as_input(batch, network)).to("cpu", dtype=torch.float64).numpy()


def _check_features(feats, n_images: int, what: str) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] != n_images:
        raise InputError(f"{what}: the extractor must return ({n_images}, D) features, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise InputError(f"{what}: the extractor returned NaN or inf features")
    return feats


def extract_features(images, extractor, batch_size: int = 16, what: str = "images") -> np.ndarray:
    """``(N, D)`` float64 features of uint8 ``HxWx3`` images, ``batch_size`` images at a time.

    ``extractor``: a ``torch.nn.Module`` taking float ``(n, 3, H, W)`` in [0, 1] (e.g. the FID
    InceptionV3), or a callable taking a uint8 ``(n, H, W, 3)`` array; both return ``(n, D)``.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if not callable(extractor):
        raise InputError(f"extractor must be a network or a callable, got {type(extractor).__name__}")
    run = (lambda batch: _run_network(extractor, batch)) if _is_module(extractor) else extractor
    items = _image_list(images, what)
    chunks = []
    for start in range(0, len(items), batch_size):
        batch = _stack(items[start:start + batch_size], what)
        chunks.append(_check_features(run(batch), len(batch), what))
    return np.concatenate(chunks)


def _resolve_extractor(extractor, weights):
    if extractor is None or (isinstance(extractor, str) and extractor == "inception"):
        from stainlab.nets.inception import fid_inception_v3

        return fid_inception_v3(weights)
    if isinstance(extractor, str):
        raise InputError(f"fid: unknown extractor {extractor!r} (use 'inception', a network or a callable)")
    if weights is not None:
        raise InputError("fid: weights only apply to the built-in 'inception' extractor; "
                         "load them into your own extractor instead")
    return extractor


def fid(images_a, images_b, extractor=None, weights=None, batch_size: int = 16) -> float:
    """Frechet distance of the features of two image sets (Heusel et al. 2017, Eq. 6): FID.

    ``extractor``: ``None``/``"inception"`` for pytorch-fid's InceptionV3 with ``weights`` (``None``:
    ``pt_inception-2015-12-05-6726825d.pth`` in the torch cache; a path; or ``"random"``, whose values
    are not comparable with published FIDs), or any extractor :func:`extract_features` accepts. Each
    set needs at least two images; FID is biased for small sets, so compare values at equal set sizes.
    """
    network = _resolve_extractor(extractor, weights)
    feats_a = extract_features(images_a, network, batch_size, "images_a")
    feats_b = extract_features(images_b, network, batch_size, "images_b")
    return frechet_distance(feats_a, feats_b)


def perceptual_hash(image, model=None) -> np.ndarray:
    """Paper 003's perceptual hash: bits of ResNet18 ``layer2`` channel means above their median.

    ``image``: uint8 ``HxWx3`` (returns a bool vector, 128 bits for ResNet18) or ``NxHxWx3`` (an
    ``(N, bits)`` array). ``model``: a :class:`stainlab.nets.ResNet`; ``None`` loads the published
    ``resnet18-f37072fd.pth`` from the torch cache (pass a model to hash many images without reloading).
    """
    import torch

    arr = np.asarray(image)
    single = arr.ndim == 3
    batch = _stack(_image_list(arr[None] if single else arr, "image"), "image")
    if model is None:
        from stainlab.nets.resnet import resnet18

        model = resnet18()
    with torch.inference_mode():
        stage = model.features(_as_input(batch, model), upto=_HASH_STAGE)
    means = stage.mean(dim=(2, 3)).to("cpu", torch.float64).numpy()
    bits = means > np.median(means, axis=1, keepdims=True)
    return bits[0] if single else bits


def hash_similarity(hash_a, hash_b):
    """Fraction of equal bits of two perceptual hashes (paper 003's P-hash score; 1 = identical).

    The Hamming distance is ``n_bits * (1 - similarity)``. Hashes ``(bits,)`` give a float,
    ``(N, bits)`` batches one value per pair.
    """
    a, b = np.asarray(hash_a, dtype=bool), np.asarray(hash_b, dtype=bool)
    if a.shape != b.shape or a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise InputError(f"hash_similarity: expected two hashes of the same shape (bits,) or (N, bits), "
                         f"got {a.shape} and {b.shape}")
    similarity = (a == b).mean(axis=-1)
    return float(similarity) if a.ndim == 1 else similarity
