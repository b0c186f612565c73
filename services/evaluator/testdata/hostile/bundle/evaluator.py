"""A function-minimization-style evaluator for the hostile corpus: it imports the candidate
and scores the point its run() returns; a dict returned by run() is passed through, so that
a candidate can report what its attack did as artifacts."""

import importlib.util


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    result = program.run()
    if isinstance(result, dict):
        return result
    x, y = result
    value = (x - 1) ** 2 + (y + 2) ** 2
    return {"combined_score": 1 / (1 + value), "value": value}
