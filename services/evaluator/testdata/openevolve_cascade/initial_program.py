# EVOLVE-BLOCK-START
def solve():
    """Return a number as close to the target as you can."""
    return 1.0
# EVOLVE-BLOCK-END


if __name__ == "__main__":
    print(solve())
