"""Fit a polynomial to a curve the evaluator knows and the program does not.

The evaluator calls coefficients() and scores how closely c0 + c1*x + ... + c5*x**5 follows
its target on [-1, 1]. Only the code between the EVOLVE-BLOCK markers changes during
evolution: a search that tunes constants, as a model's edits often do.
"""


# EVOLVE-BLOCK-START
def coefficients():
    """Return the polynomial's coefficients, constant term first."""
    c0 = 0.5
    c1 = 0.5
    c2 = 0.5
    c3 = 0.5
    c4 = 0.5
    c5 = 0.5
    return [c0, c1, c2, c3, c4, c5]
# EVOLVE-BLOCK-END


if __name__ == "__main__":
    print(coefficients())
