"""Scores a packing of 26 circles in the unit square by the sum of their radii.

OpenEvolve interface: evaluate(program_path) returns metrics, with combined_score the fitness:
the sum of radii over 2.635, the best sum known for 26 circles (a score above 1 would beat it).
An invalid packing scores 0, and its artifacts say which circle breaks which rule, so the next
prompt can show a model what to fix.
"""
import importlib.util
import math
import numbers

from openevolve.evaluation_result import EvaluationResult

N = 26
BEST_KNOWN = 2.635
# Slack for rounding in the program's arithmetic; far below any radius that matters.
TOLERANCE = 1e-9
MAX_REPORTED = 8


def load(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "construct_packing", None)):
        raise AttributeError("program defines no construct_packing()")
    return module


def read_circles(packing):
    """Turns the program's return value into [(x, y, r)], or explains why it cannot."""
    try:
        items = list(packing)
    except TypeError:
        return None, f"construct_packing() returned {type(packing).__name__}, not a list of (x, y, r)"
    if len(items) != N:
        return None, f"construct_packing() returned {len(items)} circles, want exactly {N}"
    circles = []
    for i, item in enumerate(items):
        try:
            values = list(item)
        except TypeError:
            return None, f"circle {i} is {type(item).__name__}, not (x, y, r)"
        if len(values) != 3 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            return None, f"circle {i} is {item!r}, not three numbers (x, y, r)"
        x, y, r = (float(v) for v in values)
        if not all(math.isfinite(v) for v in (x, y, r)):
            return None, f"circle {i} has a non-finite value: {(x, y, r)}"
        circles.append((x, y, r))
    return circles, ""


def violations(circles):
    """Lists every broken rule: a radius not positive, a circle crossing the square's edge, two
    circles overlapping."""
    found = []
    for i, (x, y, r) in enumerate(circles):
        if r <= 0:
            found.append(f"circle {i} has radius {r:.6g} <= 0")
            continue
        reach = min(x - r, y - r, 1 - x - r, 1 - y - r)
        if reach < -TOLERANCE:
            found.append(f"circle {i} at ({x:.6g}, {y:.6g}) r={r:.6g} crosses the square's edge by {-reach:.3g}")
    for i in range(N):
        xi, yi, ri = circles[i]
        for j in range(i + 1, N):
            xj, yj, rj = circles[j]
            overlap = ri + rj - math.hypot(xi - xj, yi - yj)
            if overlap > TOLERANCE:
                found.append(f"circles {i} and {j} overlap by {overlap:.3g}")
    return found


def evaluate(program_path):
    module = load(program_path)
    circles, problem = read_circles(module.construct_packing())
    if circles is None:
        return EvaluationResult(
            metrics={"combined_score": 0.0, "valid": 0.0, "sum_radii": 0.0, "violations": 1.0},
            artifacts={"invalid": problem},
        )
    found = violations(circles)
    radii = [r for _, _, r in circles]
    total = sum(radii)
    metrics = {
        "combined_score": 0.0 if found else total / BEST_KNOWN,
        "valid": 0.0 if found else 1.0,
        "sum_radii": total,
        "min_radius": min(radii),
        "max_radius": max(radii),
        "violations": float(len(found)),
    }
    artifacts = {}
    if found:
        shown = found[:MAX_REPORTED]
        if len(found) > MAX_REPORTED:
            shown.append(f"... and {len(found) - MAX_REPORTED} more")
        artifacts["invalid"] = "invalid packing, scored 0:\n" + "\n".join(shown)
    return EvaluationResult(metrics=metrics, artifacts=artifacts)
