"""Explanations of model predictions: SHAP (exact, permutation, kernel, tree), integrated
gradients, occlusion, and what carries an explain call to the replica that runs it.

Nothing here imports HTTP or the database; the data plane plans a job (``plan.py``) and the
replica runs it (``execute.py``) with the model it hosts.
"""

from openmaas.explain.job import METHODS, ExplainJob, ExplainResult
from openmaas.explain.types import Background, CostCapError, Explanation, Predict, Quality

__all__ = [
    "METHODS",
    "Background",
    "CostCapError",
    "ExplainJob",
    "ExplainResult",
    "Explanation",
    "Predict",
    "Quality",
]
