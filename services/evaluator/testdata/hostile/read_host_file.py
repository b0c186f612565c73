def run():
    # A file of the service's state dir, beside the work dirs (the test fills in its path).
    with open("SHOAL_HOST_FILE") as f:
        f.read()
    return (1.0, -2.0)
