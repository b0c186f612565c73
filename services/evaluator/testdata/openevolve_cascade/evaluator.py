"""Scores solve() by how close it returns 42, in two cascade stages, as OpenEvolve evaluators do."""
import importlib.util
import math
import sys
import traceback

from openevolve.evaluation_result import EvaluationResult

TARGET = 42.0


def _load(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate_stage1(program_path):
    """Cheap check: solve() runs and returns a finite number."""
    try:
        value = float(_load(program_path).solve())
    except Exception as e:
        print(f"stage 1: solve() raised {type(e).__name__}: {e}", file=sys.stderr)
        return EvaluationResult(
            metrics={"combined_score": 0.0, "runs": 0.0},
            artifacts={
                "failure_stage": "stage1",
                "error_type": type(e).__name__,
                "stage1_traceback": traceback.format_exc(),
            },
        )
    if not math.isfinite(value):
        return EvaluationResult(metrics={"combined_score": 0.0, "runs": 1.0}, artifacts={"failure_stage": "stage1", "value": repr(value)})
    return EvaluationResult(metrics={"combined_score": 1.0, "runs": 1.0}, artifacts={"stage1": "solve() returned a finite number"})


def evaluate_stage2(program_path):
    """Full score: 1 / (1 + distance to the target)."""
    value = float(_load(program_path).solve())
    distance = abs(value - TARGET)
    return {"combined_score": 1.0 / (1.0 + distance), "distance": distance}


def evaluate(program_path):
    return evaluate_stage2(program_path)
