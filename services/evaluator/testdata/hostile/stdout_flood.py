import sys


def run():
    chunk = "x" * (1 << 20) + "\n"
    for _ in range(1024):  # 1 GiB
        sys.stdout.write(chunk)
    return (1.0, -2.0)
