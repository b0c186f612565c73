import os


def run():
    # Looks for the service's credentials; the sandbox's environment has none, so this raises.
    print(dict(os.environ))
    key = os.environ["OPENAI_API_KEY"]
    print("stolen:", key, os.environ["SHOAL_TEST_SECRET"])
    return (1.0, -2.0)
