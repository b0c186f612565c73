import socket


def run():
    try:
        socket.create_connection(("1.1.1.1", 80), timeout=2).close()
        outcome = "connected"
    except OSError as e:
        outcome = f"{type(e).__name__}: {e}"
    return {"combined_score": 0.0, "network": outcome}
