"""Find the lowest point of a rugged two-dimensional landscape.

The evaluator calls search(f, bounds, rng) with its own function f and random generator and
scores how close to the global minimum the returned point lies. Only the code between the
EVOLVE-BLOCK markers changes during evolution.
"""


# EVOLVE-BLOCK-START
def search(f, bounds, rng):
    """Return the (x, y) inside bounds where f is lowest, by random local search."""
    lo, hi = bounds
    x, y = 3.0, 3.0
    best = f(x, y)
    step = 0.1
    for _ in range(40):
        nx = min(max(x + rng.uniform(-step, step), lo), hi)
        ny = min(max(y + rng.uniform(-step, step), lo), hi)
        value = f(nx, ny)
        if value < best:
            x, y, best = nx, ny, value
    return x, y
# EVOLVE-BLOCK-END


if __name__ == "__main__":
    import math
    import random

    def landscape(x, y):
        return (x - 1.3) ** 2 + (y + 0.7) ** 2 + 2 * (2 - math.cos(3 * (x - 1.3)) - math.cos(3 * (y + 0.7)))

    print(search(landscape, (-5.0, 5.0), random.Random(0)))
