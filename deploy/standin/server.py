#!/usr/bin/env python3
"""A stand-in model server: the OpenAI chat-completions API over randomly initialised weights.

shoal's `launch` backend starts model servers on leased GPUs. No real weights can be
downloaded where shoal is developed, so this server stands in for vLLM or llama.cpp: it
takes the memory a model of the given size would take (--weights-mib, spread layer by layer
over every visible GPU, as pipeline-parallel servers do), runs a forward pass per request, and
answers with a SEARCH/REPLACE edit that perturbs one number of the program's EVOLVE-BLOCK, so
a search driven by it makes progress.

Without PyTorch (or without a GPU) it runs on the CPU with the standard library alone, which
is what shoal's tests use. GET /health reports the devices it sees and the memory it holds.

    python3 server.py --port 8000 --weights-mib 20000 --model-name standin-27b
"""
import argparse
import json
import os
import random
import re
import sys
import time
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # the GPU path; everything else works without it
    import torch
except ImportError:  # pragma: no cover - depends on the machine
    torch = None


class Model:
    """Layers of random fp16 weights placed round the visible GPUs in contiguous stages."""

    def __init__(self, weights_mib, width, seed):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.devices = []
        self.layers = []
        self.allocated = {}
        if torch is None or not torch.cuda.is_available() or weights_mib <= 0:
            return
        n = torch.cuda.device_count()
        self.devices = [f"cuda:{i}" for i in range(n)]
        layer_mib = width * width * 2 / 2**20
        count = max(1, int(weights_mib / layer_mib))
        torch.manual_seed(seed)
        for i in range(count):
            dev = self.devices[i * n // count]
            # Drawn on the GPU itself: filling tens of GiB through the CPU would take minutes.
            w = torch.randn(width, width, dtype=torch.float16, device=dev) / width**0.5
            self.layers.append(w)
            self.allocated[dev] = self.allocated.get(dev, 0) + layer_mib

    def factor(self):
        """A number in [0.7, 1.3] that depends on a forward pass when there are weights."""
        with self.lock:
            if not self.layers:
                return 0.7 + 0.6 * self.rng.random()
            x = torch.randn(1, self.layers[0].shape[0], dtype=torch.float16, device=self.layers[0].device)
            for w in self.layers:
                x = torch.tanh(x.to(w.device) @ w)
            v = float(x.float().mean().item())
            return 0.7 + 0.6 * (0.5 + 0.5 * max(-1.0, min(1.0, v * 10)))

    def health(self):
        info = {"status": "ok", "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
        if torch is not None and torch.cuda.is_available():
            info["devices"] = [
                {"device": d, "name": torch.cuda.get_device_name(i), "allocated_mib": round(torch.cuda.memory_allocated(i) / 2**20, 1)}
                for i, d in enumerate(self.devices)
            ]
        else:
            info["devices"] = []
        info["weights_mib_per_device"] = {d: round(m, 1) for d, m in self.allocated.items()}
        return info


FLOAT = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.])")


def edit(prompt, factor):
    """A SEARCH/REPLACE block scaling one float literal inside the program's EVOLVE-BLOCK."""
    m = re.search(r"# Current Program\n```[^\n]*\n(.*?)\n```", prompt, re.S)
    if not m:
        return "No program found in the prompt."
    inside, candidates = False, []
    for line in m.group(1).split("\n"):
        if "EVOLVE-BLOCK-START" in line:
            inside = True
        elif "EVOLVE-BLOCK-END" in line:
            inside = False
        elif inside and FLOAT.search(line) and not line.lstrip().startswith("#"):
            candidates.append(line)
    if not candidates:
        return "Nothing to tune."
    line = candidates[int(factor * 1000) % len(candidates)]
    new = FLOAT.sub(lambda f: f"{float(f.group(1)) * factor:.4g}", line, count=1)
    if new == line:
        return "Nothing to tune."
    return f"Scale one constant.\n<<<<<<< SEARCH\n{line}\n=======\n{new}\n>>>>>>> REPLACE\n"


def handler(model, name, delay):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # keep stderr for errors
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.reply(200, model.health())
            elif self.path == "/v1/models":
                self.reply(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            if self.path != "/v1/chat/completions":
                self.reply(404, {"error": "not found"})
                return
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                prompt = req["messages"][-1]["content"]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                self.reply(400, {"error": {"message": f"bad request: {exc}"}})
                return
            time.sleep(delay)  # a model's generation time, for tests of slow servers
            content = edit(prompt, model.factor())
            content += f"\n(stand-in on CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})\n"
            self.reply(200, {
                "id": "standin", "object": "chat.completion", "model": req.get("model", name),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(content) // 4,
                          "total_tokens": (len(prompt) + len(content)) // 4},
            })

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model-name", default="standin")
    p.add_argument("--weights-mib", type=float, default=0, help="memory the weights take, over all visible GPUs")
    p.add_argument("--width", type=int, default=4096, help="layer width; a layer takes width² fp16 values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reply-delay", type=float, default=0, help="seconds each completion takes")
    args = p.parse_args()
    model = Model(args.weights_mib, args.width, args.seed)
    server = ThreadingHTTPServer((args.host, args.port), handler(model, args.model_name, args.reply_delay))
    print(json.dumps({"listening": f"{args.host}:{args.port}", **model.health()}), file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
