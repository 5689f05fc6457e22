"""The training-pipeline helper: NormalizedDataset and normalize_stream, also inside DataLoader workers."""

import pickle
import warnings
from collections import namedtuple

import numpy as np
import pytest

import stainlab
from stainlab import NoTissueError, NoTissueWarning, NormalizedDataset, NotFittedError, normalize_stream
from synth import he_image

WHITE = np.full((48, 48, 3), 250, np.uint8)


def _tiles(n=6, size=48):
    return [np.ascontiguousarray(he_image((size, size), seed=10 + i, scale=(0.7 + 0.1 * i, 1.2))) for i in range(n)]


class Tiles:
    """A map-style dataset (no torch base class needed) of ``(image, index, numba threads, torch threads)``:
    the thread counts are read when the item is read, i.e. after the wrapper's first call set them."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        import numba
        import torch
        return self.images[i], i, numba.get_num_threads(), torch.get_num_threads()


@pytest.fixture(scope="module")
def macenko(he_reference):
    return stainlab.load("macenko").fit(he_reference)


@pytest.fixture(scope="module")
def tiles():
    return _tiles()


def _load(dataset, context="forkserver", **kwargs):
    """All items through a real DataLoader with 2 workers; forkserver, as the docs advise once numba runs."""
    from torch.utils.data import DataLoader
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list, multiprocessing_context=context,
                        **kwargs)
    return [item for batch in loader for item in batch]


class Twice(Tiles):
    """Items ``(image, image, image, index, numba threads, torch threads)``: one image to normalize, two to augment."""

    def __getitem__(self, i):
        image, *rest = super().__getitem__(i)
        return (image, image, image, *rest)


SEEDED = dict(sigma1=0.2, sigma2=0.2)


@pytest.fixture(scope="module")
def through_workers(macenko, tiles):
    """One real DataLoader pass with 2 workers (each starts a Python with torch: seconds), shared by the
    tests below: element 0 normalized, 1 augmented under seed 3, 2 by an augmenter with its own seed (every
    worker gets a copy of one generator), wrappers nested so all three run in the workers."""
    import numba
    before = numba.get_num_threads()
    data = NormalizedDataset(Twice(tiles[:2] * 2), macenko, key=0)
    data = NormalizedDataset(data, stainlab.StainAugmenter(**SEEDED), key=1, seed=3)
    data = NormalizedDataset(data, stainlab.StainAugmenter(**SEEDED, seed=1), key=2)
    items = _load(data)
    assert numba.get_num_threads() == before  # the main process is left alone
    return items


def test_dataloader_workers_give_the_direct_outputs_with_one_thread_each(macenko, tiles, through_workers):
    assert [item[3] for item in through_workers] == [0, 1, 2, 3]
    for out, _, _, i, numba_threads, torch_threads in through_workers:
        np.testing.assert_array_equal(out, macenko(tiles[i % 2]))
        assert not np.array_equal(out, tiles[i % 2])
        assert (numba_threads, torch_threads) == (1, 1)


def test_seeded_augmentation_in_workers_matches_the_main_process(tiles, through_workers):
    direct = NormalizedDataset(tiles[:2] * 2, stainlab.StainAugmenter(**SEEDED), seed=3)
    for _, out, _, i, _, _ in through_workers:
        np.testing.assert_array_equal(out, direct[i])
    assert not np.array_equal(through_workers[0][1], through_workers[2][1])  # same tile, other index


def test_unseeded_augmenter_does_not_repeat_across_workers(through_workers):
    outs = [item[2] for item in through_workers]
    assert not np.array_equal(outs[0], outs[2]) and not np.array_equal(outs[1], outs[3])


def test_a_forked_worker_after_gnu_openmp_started_says_what_to_do(macenko, tiles):
    from stainlab.transforms.pipeline import _forked_gnu_openmp
    macenko(tiles[0])  # numba's threads are running in this process now
    data = NormalizedDataset(Tiles(tiles[:2]), macenko, key=0)
    if not _forked_gnu_openmp():
        pytest.skip("numba's threading layer here is fork-safe")
    with pytest.raises(stainlab.StainlabError, match="multiprocessing_context='forkserver'"):
        _load(data, "fork")


def test_the_main_process_is_not_limited(macenko, tiles):
    import numba
    before = numba.get_num_threads()
    out, _, numba_threads, _ = NormalizedDataset(Tiles(tiles), macenko, key=0)[1]
    assert numba_threads == before == numba.get_num_threads()
    np.testing.assert_array_equal(out, macenko(tiles[1]))


def test_pickle_round_trip_gives_identical_outputs(macenko, tiles):
    for transform, seed in ((macenko, None), (stainlab.StainAugmenter(sigma1=0.2, sigma2=0.2), 5)):
        data = NormalizedDataset(tiles, transform, seed=seed)
        copy = pickle.loads(pickle.dumps(data))
        for i in range(len(tiles)):
            np.testing.assert_array_equal(copy[i], data[i])


def test_augmentation_is_reproducible_under_a_seed_and_new_per_item_and_epoch(tiles):
    same = [tiles[0]] * 6
    aug = stainlab.StainAugmenter(sigma1=0.2, sigma2=0.2)
    a = NormalizedDataset(same, aug, seed=3)
    b = NormalizedDataset(same, stainlab.StainAugmenter(sigma1=0.2, sigma2=0.2), seed=3)
    first = [a[i] for i in range(6)]
    for i in (5, 0, 3):  # any order, any instance: the item's jitter depends on (seed, epoch, index)
        np.testing.assert_array_equal(b[i], first[i])
    assert len({out.tobytes() for out in first}) == 6      # a new jitter per item
    assert not np.array_equal(first[0], tiles[0])
    a.set_epoch(1)
    assert all(not np.array_equal(a[i], first[i]) for i in range(6))
    assert not np.array_equal(NormalizedDataset(same, aug, seed=4)[0], first[0])


def test_items_keep_their_type(macenko, tiles):
    import torch
    Item = namedtuple("Item", "label image")
    data = [{"image": tiles[0], "label": 3}, Item(4, tiles[1]), [tiles[2], 5]]
    dict_out = NormalizedDataset(data[:1], macenko, key="image")[0]
    assert dict_out["label"] == 3 and data[0]["image"] is tiles[0]  # the input item is not modified
    np.testing.assert_array_equal(dict_out["image"], macenko(tiles[0]))
    named = NormalizedDataset(data[1:2], macenko, key=1)[0]
    assert type(named) is Item and named.label == 4
    np.testing.assert_array_equal(named.image, macenko(tiles[1]))
    listed = NormalizedDataset(data[2:], macenko, key=0)[0]
    assert type(listed) is list and listed[1] == 5

    tensor = torch.from_numpy(tiles[3]).permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1]
    out = NormalizedDataset([(tensor, 1)], macenko, key=0)[0][0]
    assert out.shape == tensor.shape and out.dtype == tensor.dtype
    torch.testing.assert_close(out, macenko(tensor), rtol=0, atol=0)
    signed = NormalizedDataset([tensor * 2 - 1], macenko, value_range=(-1, 1))[0]
    torch.testing.assert_close(signed, macenko(tensor * 2 - 1, value_range=(-1, 1)), rtol=0, atol=0)


def test_tiles_without_tissue_pass_through_warned_once_and_counted(macenko, tiles):
    data = NormalizedDataset([tiles[0], WHITE, WHITE, tiles[1]], macenko)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [data[i] for i in range(4)]
    assert [w.category for w in caught] == [NoTissueWarning]
    assert "item 1" in str(caught[0].message) and "no_tissue_count" in str(caught[0].message)
    np.testing.assert_array_equal(outs[1], WHITE)
    np.testing.assert_array_equal(outs[3], macenko(tiles[1]))
    assert data.no_tissue_count == 2

    loud = NormalizedDataset([WHITE, WHITE], macenko, no_tissue="always")
    with pytest.warns(NoTissueWarning) as record:
        loud[0], loud[1]
    assert len(record) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NormalizedDataset([WHITE], macenko, no_tissue="ignore")[0]
    with pytest.raises(NoTissueError, match="item 0"):
        NormalizedDataset([WHITE], macenko, no_tissue="error")[0]


def test_stream_is_lazy_and_matches_the_transform(macenko, tiles):
    read = []

    def source():
        for i, tile in enumerate(tiles):
            read.append(i)
            yield tile, i

    stream = normalize_stream(source(), macenko, key=0)
    assert read == []
    out, i = next(stream)
    assert read == [0] and i == 0
    np.testing.assert_array_equal(out, macenko(tiles[0]))
    assert [j for _, j in stream] == list(range(1, len(tiles)))

    aug = stainlab.StainAugmenter(sigma1=0.2, sigma2=0.2)
    once, again = (list(normalize_stream(tiles, aug, seed=9)) for _ in range(2))
    for x, y in zip(once, again):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(next(normalize_stream(tiles[2:], aug, seed=9, start=2)), once[2])


def test_a_list_of_transforms_applies_in_order_and_a_saved_one_loads(macenko, tiles, tmp_path):
    aug = stainlab.StainAugmenter(sigma1=0.2, sigma2=0.2)
    both = NormalizedDataset(tiles, [macenko, aug], seed=2)
    alone = NormalizedDataset([macenko(t) for t in tiles], aug, seed=2)
    np.testing.assert_array_equal(both[4], alone[4])
    macenko.save(tmp_path / "m.json")
    np.testing.assert_array_equal(NormalizedDataset(tiles, str(tmp_path / "m.json"))[0], macenko(tiles[0]))


def test_bad_arguments_are_refused_up_front(tiles):
    with pytest.raises(NotFittedError):
        NormalizedDataset(tiles, stainlab.load("macenko"))
    with pytest.raises(stainlab.InputError, match="no_tissue"):
        NormalizedDataset(tiles, stainlab.load("grayscale"), no_tissue="sometimes")
    with pytest.raises(stainlab.InputError, match="map-style"):
        NormalizedDataset(iter(tiles), stainlab.load("grayscale"))
    with pytest.raises(stainlab.InputError, match="no element 'image'"):
        NormalizedDataset([(tiles[0], 1)], stainlab.load("grayscale"), key="image")[0]
