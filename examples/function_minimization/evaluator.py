"""Scores a search() program on a rugged landscape whose global minimum is 0 at (1.3, -0.7).

OpenEvolve interface: evaluate(program_path) returns metrics, with combined_score the fitness
(higher is better, 1.0 is a perfect find). Each program gets a budget of function calls per
trial; spending more scores the trial 0, so better search, not brute force, is what pays.
"""
import importlib.util
import math
import random

from openevolve.evaluation_result import EvaluationResult

BOUNDS = (-5.0, 5.0)
MINIMUM = (1.3, -0.7)
TRIALS = 5
CALL_BUDGET = 2000


class BudgetExceeded(Exception):
    pass


def landscape(x, y):
    dx, dy = x - MINIMUM[0], y - MINIMUM[1]
    return dx * dx + dy * dy + 2 * (2 - math.cos(3 * dx) - math.cos(3 * dy))


def load(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "search"):
        raise AttributeError("program defines no search(f, bounds, rng)")
    return module


def trial(module, seed):
    calls = 0

    def f(x, y):
        nonlocal calls
        calls += 1
        if calls > CALL_BUDGET:
            raise BudgetExceeded(f"more than {CALL_BUDGET} calls of f")
        return landscape(float(x), float(y))

    x, y = module.search(f, BOUNDS, random.Random(seed))
    x, y = float(x), float(y)
    if not (BOUNDS[0] <= x <= BOUNDS[1] and BOUNDS[0] <= y <= BOUNDS[1]):
        raise ValueError(f"point ({x}, {y}) lies outside the bounds {BOUNDS}")
    return landscape(x, y), math.hypot(x - MINIMUM[0], y - MINIMUM[1]), calls


def evaluate(program_path):
    module = load(program_path)
    values, distances, calls, notes = [], [], [], []
    for seed in range(TRIALS):
        try:
            value, distance, used = trial(module, seed)
        except BudgetExceeded as exc:
            notes.append(f"trial {seed}: {exc}")
            value, distance, used = math.inf, math.inf, CALL_BUDGET
        values.append(value)
        distances.append(distance)
        calls.append(used)
    scores = [1.0 / (1.0 + v) for v in values]
    metrics = {
        "combined_score": sum(scores) / TRIALS,
        "mean_value": sum(v for v in values if math.isfinite(v)) / max(1, sum(math.isfinite(v) for v in values)),
        "mean_distance": sum(d for d in distances if math.isfinite(d)) / max(1, sum(math.isfinite(d) for d in distances)),
        "mean_calls": sum(calls) / TRIALS,
    }
    artifacts = {"budget": "; ".join(notes)} if notes else {}
    return EvaluationResult(metrics=metrics, artifacts=artifacts)
