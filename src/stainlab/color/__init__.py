"""Colour science: optical density, stain vectors, tissue masks and weighted statistics.

This package uses nothing else of stainlab's.
"""

from stainlab.color.od import od_to_rgb, rgb_to_od
from stainlab.color.stains import (DAB, EOSIN, HEMATOXYLIN, angle_degrees, complete_basis,
                                   normalize_rows, order_like)
from stainlab.color.tissue import tissue_mask, tissue_mask_od

__all__ = ["rgb_to_od", "od_to_rgb", "HEMATOXYLIN", "EOSIN", "DAB", "normalize_rows", "complete_basis",
           "order_like", "angle_degrees", "tissue_mask", "tissue_mask_od"]
