"""The part of OpenEvolve's package that evaluators import, provided by shoal's harness.

Evaluators written for OpenEvolve do `from openevolve.evaluation_result import
EvaluationResult`; this package lets them run unchanged without OpenEvolve installed.
"""

from openevolve.evaluation_result import EvaluationResult

__all__ = ["EvaluationResult"]
