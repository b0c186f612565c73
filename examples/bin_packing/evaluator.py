"""Scores an online bin-packing heuristic, as in FunSearch's bin-packing problem.

Items arrive one at a time and must go into a bin at once: the program's priority(item,
remaining) scores each open bin that still has room, the item goes to the highest-scoring one,
and a new bin is opened when none has room. combined_score is the mean over fixed instances of
L1 / bins used, where L1 = ceil(sum of sizes / capacity) is the lower bound no packing can beat,
so 1.0 would be perfect on every instance.
"""
import importlib.util
import math
import numbers
import random

from openevolve.evaluation_result import EvaluationResult

CAPACITY = 150
ITEMS = 250
# (seed, smallest item, largest item): fixed instances, so every candidate sees the same ones.
INSTANCES = [(1, 20, 100), (2, 20, 100), (3, 20, 100), (4, 20, 100)]


def instance(seed, lo, hi):
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(ITEMS)]


def load(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "priority", None)):
        raise AttributeError("program defines no priority(item, remaining)")
    return module


class BadPriority(Exception):
    pass


def pack(priority, items):
    """Packs items online with the program's priority; returns the number of bins."""
    remaining = []
    for n, item in enumerate(items):
        best, best_score = -1, -math.inf
        for b, room in enumerate(remaining):
            if room < item:
                continue
            score = priority(item, room)
            if not isinstance(score, numbers.Real) or isinstance(score, bool) or not math.isfinite(score):
                raise BadPriority(f"priority({item}, {room}) returned {score!r} for item {n}; want a finite number")
            if score > best_score:
                best, best_score = b, score
        if best < 0:
            remaining.append(CAPACITY - item)
        else:
            remaining[best] -= item
    return len(remaining)


def evaluate(program_path):
    module = load(program_path)
    ratios, excess = [], []
    try:
        for seed, lo, hi in INSTANCES:
            items = instance(seed, lo, hi)
            bound = math.ceil(sum(items) / CAPACITY)
            bins = pack(module.priority, items)
            ratios.append(bound / bins)
            excess.append(bins - bound)
    except BadPriority as exc:
        return EvaluationResult(
            metrics={"combined_score": 0.0, "valid": 0.0},
            artifacts={"invalid": f"instance {len(ratios)}: {exc}"},
        )
    return EvaluationResult(
        metrics={
            "combined_score": sum(ratios) / len(ratios),
            "valid": 1.0,
            "worst_ratio": min(ratios),
            "excess_bins": float(sum(excess)),
        },
        artifacts={"bins_over_bound": ", ".join(f"instance {i}: +{e}" for i, e in enumerate(excess))},
    )
