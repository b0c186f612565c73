def run():
    metrics = {f"metric_{i}": float(i) for i in range(100000)}
    metrics["blob"] = "x" * (8 << 20)
    return metrics
