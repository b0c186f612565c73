"""Pack 26 circles into the unit square so that the sum of their radii is as large as possible.

construct_packing() returns 26 (x, y, r) triples. The seed places the centres in rings and
lets fit_radii() grow each circle until it meets the square's edge or a neighbour. Only the
code between the EVOLVE-BLOCK markers changes during evolution: nudging centres is what the
mutate backend does well; a model may also replace the construction.
"""


# EVOLVE-BLOCK-START
def centres():
    """The 26 circle centres. The seed is a ring construction written out point by point (one
    centre, a ring of 8 at distance 0.24, a ring of 17 at 0.45 pulled inside the square), so
    that every centre can move on its own."""
    return [
        (0.500, 0.500),
        (0.740, 0.500),
        (0.670, 0.670),
        (0.500, 0.740),
        (0.330, 0.670),
        (0.260, 0.500),
        (0.330, 0.330),
        (0.500, 0.260),
        (0.670, 0.330),
        (0.940, 0.545),
        (0.901, 0.704),
        (0.801, 0.835),
        (0.659, 0.921),
        (0.497, 0.940),
        (0.334, 0.918),
        (0.194, 0.830),
        (0.096, 0.698),
        (0.060, 0.538),
        (0.068, 0.374),
        (0.143, 0.226),
        (0.266, 0.116),
        (0.421, 0.060),
        (0.586, 0.060),
        (0.740, 0.119),
        (0.861, 0.232),
        (0.934, 0.380),
    ]
# EVOLVE-BLOCK-END


def fit_radii(points, sweeps=20):
    """Radii for the centres: each circle starts at half the distance to its nearest
    neighbour (so no two can overlap and none is left out), then the circles grow in turn, each
    as far as the square's edge and its neighbours allow. The packing is valid whenever the
    centres are distinct points inside the square."""
    n = len(points)

    def dist(i, j):
        (x, y), (u, v) = points[i], points[j]
        return ((x - u) ** 2 + (y - v) ** 2) ** 0.5

    def edge(i):
        x, y = points[i]
        return min(x, y, 1.0 - x, 1.0 - y)

    radii = [min([edge(i)] + [dist(i, j) / 2 for j in range(n) if j != i]) for i in range(n)]
    for _ in range(sweeps):
        grown = False
        for i in range(n):
            r = min([edge(i)] + [dist(i, j) - radii[j] for j in range(n) if j != i])
            if r > radii[i]:
                radii[i], grown = r, True
        if not grown:
            break
    return radii


def construct_packing():
    points = centres()
    radii = fit_radii(points)
    return [(x, y, r) for (x, y), r in zip(points, radii)]


if __name__ == "__main__":
    packing = construct_packing()
    print(f"{len(packing)} circles, sum of radii {sum(r for _, _, r in packing):.4f}")
