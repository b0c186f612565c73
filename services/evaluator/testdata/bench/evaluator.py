"""The benchmark's evaluator: it imports a few heavy standard modules at the top, as real
evaluators import numpy or torch, and does little per candidate, so that what a candidate
costs beyond evaluate() is the sandbox's overhead."""

import asyncio  # noqa: F401
import decimal  # noqa: F401
import email.mime.multipart  # noqa: F401
import http.client  # noqa: F401
import json  # noqa: F401
import statistics
import unittest  # noqa: F401
import xml.etree.ElementTree  # noqa: F401


def evaluate(program_path):
    with open(program_path) as f:
        source = f.read()
    namespace = {}
    exec(compile(source, program_path, "exec"), namespace)
    value = namespace["run"]()
    return {"combined_score": statistics.fmean([value, value])}
