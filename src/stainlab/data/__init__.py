"""Data: folder datasets (unpaired, paired, HEV, BCI), tile extraction, and the restaining simulator
(real tissue, known stain shift, exact ground truth) with its presets and the looks its truth is
rendered in."""

from stainlab.data.benchmark import make_benchmark
from stainlab.data.folders import BCIDataset, PairedFolders, UnpairedFolders, hev, level_from_name
from stainlab.data.looks import Look, look_of
from stainlab.data.presets import PRESETS, Preset, preset
from stainlab.data.simulate import HER2_LEVELS, Staining, he_to_ihc, render, restain
from stainlab.data.tiles import Tile, extract_tiles

__all__ = ["Staining", "restain", "render", "he_to_ihc", "HER2_LEVELS", "PRESETS", "Preset", "preset",
           "make_benchmark", "UnpairedFolders", "PairedFolders", "BCIDataset", "hev", "level_from_name",
           "Tile", "extract_tiles", "Look", "look_of"]
