"""Many slides, or one large slide, on a Dask cluster (an embedded LocalCluster, or a scheduler address)."""

from stainlab.distributed.cohort import SlideJob, SlideOutcome, run_cohort, run_local, run_slide_tiles

__all__ = ["SlideJob", "SlideOutcome", "run_cohort", "run_local", "run_slide_tiles"]
