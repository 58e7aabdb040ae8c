"""`polyasr batch`: whole datasets, in one process or on a Ray cluster (see job.py)."""

from polyasr.batch.inputs import read_inputs
from polyasr.batch.job import RayPlan, Summary, run_batch

__all__ = ["RayPlan", "Summary", "read_inputs", "run_batch"]
