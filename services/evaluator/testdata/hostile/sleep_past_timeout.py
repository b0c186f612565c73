import time


def run():
    time.sleep(60)
