"""shoal's evaluation harness: runs one OpenEvolve-style evaluator on one program.

The sandbox's zygote (internal/sandbox/zygote.py) imports it: prepare(path) imports the
evaluator once, in the zygote; run(state, program, ...) evaluates one candidate, in the
confined child the zygote forked, and returns the report, which the child writes to its
report pipe as one JSON object:

    {"metrics": {name: finite number}, "artifacts": {name: text}, "stage": k,
     "error": "last line of the exception", "traceback": "...", "elapsed": seconds}

Metrics keep numbers only (bools become 0/1); other values move to artifacts, and NaN or
infinite values are dropped with a note in the "dropped_metrics" artifact. An exception from
the evaluator is reported, not raised. "elapsed" is the time spent in evaluate() (or the
stages), which tells the sandbox's overhead apart from the evaluator's own work.
"""

import importlib.util
import json
import math
import numbers
import os
import sys
import time
import traceback
from collections.abc import Mapping

STAGES = (1, 2, 3)


def prepare(path):
    """Imports the evaluator (and with it its heavy modules) and returns it."""
    path = os.path.abspath(path)
    sys.argv = [path]
    return load(path)


def run(module, program, cascade_on, thresholds):
    """Evaluates program with the prepared evaluator and returns the report."""
    program = os.path.abspath(program)
    report = {"metrics": {}, "artifacts": {}, "stage": 0}
    start = time.perf_counter()
    try:
        if cascade_on and hasattr(module, "evaluate_stage1"):
            cascade(module, program, [float(t) for t in thresholds], report)
        else:
            evaluate = getattr(module, "evaluate", None)
            if not callable(evaluate):
                raise AttributeError(f"{module.__file__} defines no evaluate(program_path)")
            merge(report, evaluate(program))
    except BaseException as exc:  # whatever the evaluator raised is the report, even SystemExit
        report["error"] = last_line(exc)
        report["traceback"] = traceback.format_exc()
    report["elapsed"] = time.perf_counter() - start
    return report


def load(path):
    """Imports the evaluator from its file, with its directory first on sys.path."""
    sys.path.insert(0, os.path.dirname(path))
    name = os.path.splitext(os.path.basename(path))[0]
    if not name.isidentifier():
        name = "evaluation_module"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load evaluator {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def cascade(module, program, thresholds, report):
    """Runs evaluate_stage1/2/3 as OpenEvolve does: stage k+1 runs only if the metrics so far
    pass stage k's threshold; metrics of later stages override those of earlier ones."""
    for stage in STAGES:
        fn = getattr(module, f"evaluate_stage{stage}", None)
        if not callable(fn):
            return
        if stage > 1:
            if len(thresholds) < stage - 1 or not passes(report["metrics"], thresholds[stage - 2]):
                return
        report["stage"] = stage
        merge(report, fn(program))


def passes(metrics, threshold):
    """combined_score when present, else the mean of the numeric metrics, reaches threshold."""
    if "combined_score" in metrics:
        return metrics["combined_score"] >= threshold
    values = [v for k, v in metrics.items() if k != "error"]
    return bool(values) and sum(values) / len(values) >= threshold


def merge(report, result):
    """Folds a dict of metrics or an EvaluationResult (anything with .metrics and .artifacts)
    into the report."""
    artifacts = {}
    if isinstance(result, Mapping):
        metrics = result
    elif hasattr(result, "metrics"):
        metrics = result.metrics
        artifacts = getattr(result, "artifacts", None) or {}
    else:
        raise TypeError(
            f"evaluator returned {type(result).__name__}; want a dict of metrics or an EvaluationResult"
        )
    if not isinstance(metrics, Mapping):
        raise TypeError(f"evaluator's metrics are a {type(metrics).__name__}, not a dict")
    for name, value in metrics.items():
        name = str(name)
        number = as_number(value)
        if number is None:
            report["metrics"].pop(name, None)
            report["artifacts"][name] = text(value)
        elif not math.isfinite(number):
            report["metrics"].pop(name, None)
            note = f"{name}={number}"
            dropped = report["artifacts"].get("dropped_metrics")
            report["artifacts"]["dropped_metrics"] = f"{dropped}, {note}" if dropped else note
        else:
            report["metrics"][name] = number
    if isinstance(artifacts, Mapping):
        for name, value in artifacts.items():
            report["artifacts"][str(name)] = text(value)
    else:
        report["artifacts"]["artifacts"] = text(artifacts)


def as_number(value):
    """A float for bools, numbers and one-element numpy/torch values; None otherwise."""
    if not isinstance(value, (str, bytes, bytearray, Mapping)) and callable(getattr(value, "item", None)):
        try:
            value = value.item()
        except Exception:
            return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (Mapping, list, tuple)):
        try:
            return json.dumps(value, default=str)
        except (TypeError, ValueError):
            pass
    return str(value)


def last_line(exc):
    """The "Type: message" line of an exception, as a traceback ends with it."""
    lines = "".join(traceback.format_exception_only(type(exc), exc)).splitlines()
    name = type(exc).__name__
    for line in reversed(lines):
        if line.startswith(name) or line.startswith(f"{type(exc).__module__}.{name}"):
            return line.strip()
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1] if lines else name
