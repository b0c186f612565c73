"""Imports the candidate and scores what its run() returns, as most OpenEvolve evaluators do."""

import importlib.util
import os


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    value = program.run()
    return {
        "combined_score": value,
        "valid": True,
        # Not a number: the harness moves it to the artifacts.
        "environment": " ".join(sorted(os.environ)),
        "cwd_is_home": os.getcwd() == os.environ.get("HOME"),
    }
