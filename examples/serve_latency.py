"""Server-side search latency of ``bindspace serve``: p50 / p95 over N text queries through the real app (in-process
ASGI client, model already loaded and warmed), plus more-like-this queries.

    python examples/serve_latency.py --index runs/demo/index [--queries 100] [--k 10]

``query_ms`` is what the server measures (embedding + index search); ``request_ms`` the whole HTTP round trip
through FastAPI (JSON in and out, no previews). Text queries are the captions of the index's own text rows when it
has some, else generated sentences.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from fastapi.testclient import TestClient

from bind.serve.app import create_app
from bind.serve.cli import load_gallery


def percentile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", action="append", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("-k", type=int, default=10)
    args = p.parse_args()
    gallery = load_gallery(args.index, args.model)
    gallery.warm()
    client = TestClient(create_app(gallery))
    rng = random.Random(0)
    colours, shapes = ["red", "blue", "green", "yellow", "purple", "orange"], ["cube", "sphere", "cone", "torus"]
    texts = [
        f"a {rng.choice(colours)} {rng.choice(shapes)} moving {rng.choice(['left', 'right', 'up'])}"
        for _ in range(args.queries)
    ]
    rows = len(gallery.served[0].index)
    results = {}
    for kind, make in [
        ("text", lambda i: {"text": texts[i]}),
        ("more-like-this", lambda i: {"item": {"index": 0, "row": rng.randrange(rows)}}),
    ]:
        server, wall = [], []
        for i in range(args.queries):
            t = time.perf_counter()
            r = client.post("/api/search", json={"queries": [make(i)], "k": args.k})
            wall.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            server.append(r.json()["query_ms"])
        results[kind] = {
            "query_ms_p50": round(percentile(server, 50), 2),
            "query_ms_p95": round(percentile(server, 95), 2),
            "request_ms_p50": round(percentile(wall, 50), 2),
            "request_ms_p95": round(percentile(wall, 95), 2),
        }
    print(
        json.dumps(
            {
                "indexes": [f"{s.name} ({len(s.index)} rows)" for s in gallery.served],
                "model": gallery.info.name,
                "queries": args.queries,
                "k": args.k,
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
