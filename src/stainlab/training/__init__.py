"""Training the learned normalizers: one loop (:func:`train`) and the recipes of papers 000, 003 and 004.

>>> from stainlab.training import TrainingData, train
>>> result = train("cyclegan", TrainingData.from_folder("tiles/"), "runs/teacher", preset="tiny",
...                overrides={"skips": True, "ssim_cycle": True})
>>> stainlab.load(f"cyclegan:{result.models['G_AB.safetensors']}")
"""

from stainlab.training.loop import TrainResult, make_config, train
from stainlab.training.recipe import Recipe, TrainConfig, TrainingData
from stainlab.training.recipes import RECIPES

__all__ = ["RECIPES", "Recipe", "TrainConfig", "TrainResult", "TrainingData", "make_config", "train"]
