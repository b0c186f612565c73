"""A cascade whose stages score the candidate's SCORE constant, each a little higher."""

import importlib.util


def _score(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    return program.SCORE


def evaluate_stage1(program_path):
    return {"combined_score": _score(program_path), "stage1": 1}


def evaluate_stage2(program_path):
    return {"combined_score": _score(program_path) + 0.01, "stage2": 1}


def evaluate_stage3(program_path):
    return {"combined_score": _score(program_path) + 0.02, "stage3": 1}


def evaluate(program_path):
    raise AssertionError("evaluate() must not run when the cascade is on")
