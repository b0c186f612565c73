"""Online bin packing: choose a bin for each item as it arrives, using as few bins as possible.

The evaluator calls priority(item, remaining) for every open bin with room for the item
(remaining is the bin's free capacity, at least item) and puts the item into the bin with the
highest priority; when no bin has room it opens a new one. Only the code between the
EVOLVE-BLOCK markers changes during evolution.
"""


# EVOLVE-BLOCK-START
def priority(item, remaining):
    """Best fit with a twist: prefer the bin the item fills most tightly, and reward leaving a
    gap that a typical later item could still fill."""
    gap = remaining - item
    score = -1.0 * gap
    if gap == 0:
        score += 50.0
    if 20.0 <= gap <= 30.0:
        score += 5.0
    return score
# EVOLVE-BLOCK-END


if __name__ == "__main__":
    import random

    rng = random.Random(1)
    items = [rng.randint(20, 100) for _ in range(250)]
    bins = []
    for item in items:
        fits = [b for b, room in enumerate(bins) if room >= item]
        if fits:
            b = max(fits, key=lambda b: priority(item, bins[b]))
            bins[b] -= item
        else:
            bins.append(100 - item)
    print(f"{len(items)} items in {len(bins)} bins")
