import os
import sys


def run():
    bundle = sys.path[0]  # the harness puts the evaluator's dir first
    # The private /tmp takes it; the host's /tmp never sees it.
    with open("/tmp/shoal-escape-write-outside", "w") as f:
        f.write("escaped\n")
    try:
        with open(os.path.join(bundle, "escape.txt"), "w") as f:
            f.write("escaped\n")
    finally:  # not a catch: both refusals end up in the traceback
        with open("/etc/shoal-escape", "w") as f:
            f.write("escaped\n")
    return (1.0, -2.0)
