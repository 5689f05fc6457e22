"""Whole slides: reading (:mod:`.readers`), tiling and blending (:mod:`.tiling`), the pyramid writer
(:mod:`.pyramid`), normalizing one slide (:mod:`.normalize`) and cohorts on a Dask cluster (:mod:`.cohort`).

>>> from stainlab.wsi import SlideOptions, normalize_slide, open_slide      # doctest: +SKIP
"""

from stainlab.wsi.cohort import run_cohort, run_local, run_slide_tiles
from stainlab.wsi.normalize import SlideOptions, SlideResult, normalize_slide, output_path, sample_tissue
from stainlab.wsi.readers import Slide, open_slide
from stainlab.wsi.references import list_slides, read_references
from stainlab.wsi.tiling import TileGrid, run_tiled

__all__ = ["run_cohort", "run_local", "run_slide_tiles", "SlideOptions", "SlideResult",
           "normalize_slide", "output_path", "sample_tissue", "Slide", "open_slide", "list_slides", "read_references", "TileGrid", "run_tiled"]
