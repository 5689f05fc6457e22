"""Reading, validating and writing images."""

from stainlab.io.arrays import check_rgb8

__all__ = ["check_rgb8"]
