"""Reading, validating and writing images, and laying them out in montages."""

from stainlab.io.arrays import check_rgb8
from stainlab.io.images import IMAGE_SUFFIXES, list_images, read_image, write_image

__all__ = ["check_rgb8", "read_image", "write_image", "list_images", "IMAGE_SUFFIXES"]
