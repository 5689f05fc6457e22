"""Neural colour transfer (paper 001, Algorithm 2): VGG19 features, PatchMatch, bidirectional voting,
local linear colour maps and the fast guided filter. :func:`neural_color_transfer` runs it on arrays;
``stainlab.load("nct")`` wraps it in the shared transform face."""

from stainlab.nct.features import feature_network
from stainlab.nct.pipeline import (
           LAMBDAS,
           LUMINANCE,
           NCTConfig,
           ReferenceCache,
           Timings,
           neural_color_transfer,
)

__all__ = ["LAMBDAS", "LUMINANCE", "NCTConfig", "ReferenceCache", "Timings", "feature_network",
           "neural_color_transfer"]
