#!/bin/sh
# A language-agnostic evaluator: chatter, then one JSON object of metrics on the last line.
echo "scoring $1"
lines=$(wc -l < "$1")
echo "{\"combined_score\": 0.5, \"lines\": $lines, \"passed\": true, \"verdict\": \"fine\"}"
echo "done" >&2
