# Run by a command evaluator (python3 {program}): prints anything but a JSON object.
import os
import sys

print("PGID", os.getpgid(0), file=sys.stderr, flush=True)
print("{not json: at all")
print("score = 0.5")
