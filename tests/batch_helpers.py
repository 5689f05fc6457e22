"""Transforms for the batch tests that must be importable by worker processes (spawned, unpickled)."""

import os
import signal
import time
from pathlib import Path

import numpy as np

from stainlab.transforms.base import Transform


class KillOnMarker(Transform):
    """Inverts the image, but its worker process is killed (as by the out-of-memory killer) on an image
    whose first pixel is 13 — every time, or only the first time when ``once`` names a marker file."""

    name = "killer"
    requires_fit = False

    def __init__(self, once: str = "") -> None:
        super().__init__()
        self.once = once

    def _transform(self, image: np.ndarray) -> np.ndarray:
        if image[0, 0, 0] == 13 and not (self.once and Path(self.once).exists()):
            if self.once:
                Path(self.once).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return 255 - image


class Sleepy(Transform):
    """Writes its process id into a folder, then sleeps: a batch to kill the parent of."""

    name = "sleepy"
    requires_fit = False

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def _transform(self, image: np.ndarray) -> np.ndarray:
        Path(self.folder, str(os.getpid())).touch()
        time.sleep(60)
        return image
