import os
import random
import sys


def attempt(path):
    try:
        with open(path, "w") as f:
            f.write("escaped\n")
        return "written"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def run():
    bundle = sys.path[0]  # the harness puts the evaluator's dir first
    tmp = f"/tmp/shoal-escape-{random.getrandbits(48):x}"
    return {
        "combined_score": 0.0,
        "bundle_write": attempt(os.path.join(bundle, "escape.txt")),
        "tmp_path": tmp,
        "tmp_write": attempt(tmp),
        "etc_write": attempt("/etc/shoal-escape"),
    }
