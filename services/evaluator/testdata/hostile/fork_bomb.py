# Bounded so that a 2-core test machine survives: at most 50 children, slowly.
import os
import time


def run():
    for _ in range(50):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        time.sleep(0.01)
    while True:
        time.sleep(1)
