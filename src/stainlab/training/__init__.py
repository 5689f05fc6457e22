"""Training the learned normalizers: one loop (:func:`train`, :func:`resume_run`) and the recipes of papers
000, 002, 003 and 004.

>>> from stainlab.training import TrainingData, resume_run, train
>>> result = train("cyclegan", TrainingData.from_folder("tiles/"), "runs/teacher", preset="tiny",
...                overrides={"skips": True, "ssim_cycle": True})
>>> stainlab.load(f"cyclegan:{result.models['G_AB.safetensors']}")
>>> resume_run("runs/teacher", overrides={"steps": 600})   # the same run, 300 steps further
"""

from stainlab.training.loop import TrainResult, make_config, recipe_class, resume_run, train
from stainlab.training.recipe import Option, Recipe, TrainConfig, TrainingData

__all__ = ["Option", "Recipe", "TrainConfig", "TrainResult", "TrainingData", "make_config",
           "recipe_class", "resume_run", "train"]
