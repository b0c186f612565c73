"""Fit a cubic to a noisy curve: shoal's pipeline benchmark problem, in OpenEvolve's layout."""


# EVOLVE-BLOCK-START
def coefficients():
    """The cubic's coefficients, constant term first."""
    a0 = 0.5
    a1 = 0.5
    a2 = 0.5
    a3 = 0.5
    return [a0, a1, a2, a3]
# EVOLVE-BLOCK-END


def predict(x):
    return sum(c * x**i for i, c in enumerate(coefficients()))
