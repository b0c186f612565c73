"""Scores coefficients() by how closely its polynomial follows a fixed curve on [-1, 1].

OpenEvolve interface with a cascade: evaluate_stage1 checks the program on a few points,
evaluate_stage2 on the whole grid. combined_score is log10 of the target's RMS over the
fit's RMS error, floored at 0: every tenfold cut in the error adds one, so the score keeps
rising as long as the search keeps refining the constants (the best degree-5 fit scores
about 3.3).
"""
import importlib.util
import math

from openevolve.evaluation_result import EvaluationResult

DEGREE = 5


def target(x):
    return math.exp(0.5 * x) * math.sin(1.5 * x + 0.3)


def load(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    coeffs = [float(c) for c in module.coefficients()]
    if len(coeffs) != DEGREE + 1 or not all(math.isfinite(c) for c in coeffs):
        raise ValueError(f"coefficients() must return {DEGREE + 1} finite numbers, got {coeffs}")
    return coeffs


def score(coeffs, points):
    xs = [-1.0 + 2.0 * i / (points - 1) for i in range(points)]
    err = 0.0
    norm = 0.0
    for x in xs:
        fit = sum(c * x**k for k, c in enumerate(coeffs))
        err += (fit - target(x)) ** 2
        norm += target(x) ** 2
    rms_err = math.sqrt(err / points)
    rms = math.sqrt(norm / points)
    if not math.isfinite(rms_err):
        return 0.0, rms_err
    return max(0.0, math.log10(rms / max(rms_err, 1e-12))), rms_err


def result(program_path, points):
    try:
        coeffs = load(program_path)
    except Exception as exc:  # a broken program scores 0 with the reason
        return EvaluationResult(metrics={"combined_score": 0.0, "rms_error": 1e9}, artifacts={"error": str(exc)})
    s, e = score(coeffs, points)
    return EvaluationResult(metrics={"combined_score": s, "rms_error": e}, artifacts={})


def evaluate_stage1(program_path):
    return result(program_path, 9)


def evaluate_stage2(program_path):
    return result(program_path, 201)


def evaluate(program_path):
    return evaluate_stage2(program_path)
