import os
import sys


def run():
    evaluator = os.path.join(sys.path[0], "evaluator.py")  # the harness puts its dir first
    try:
        os.remove(evaluator)
        outcome = "removed"
    except OSError as e:
        outcome = f"{type(e).__name__}: {e}"
    return {"combined_score": 0.0, "delete": outcome}
