"""``bindspace bench retrieval``: exact and approximate search speed, and approximate recall@k against exact.

Corpus: ``--n`` synthetic unit vectors of ``--dim`` dimensions drawn around ``--clusters`` random centres (relative
noise ``--noise``), the clustered structure real embedding corpora have (uniform random vectors in high dimension
have none, and make any IVF look useless). Queries are fresh draws from the same distribution.

* exact: ``faiss.IndexFlatIP`` (float32) over the full corpus, checked against a torch matmul + top-k
  (:func:`bind.retrieval.index.brute_force_topk`) on the same data — ids must agree;
* IVF: k-means on a ``--train-size`` sample, ``--nlist`` cells, each ``--nprobe``: time, recall@k, speed-up;
* HNSW (``--hnsw``): built over the first ``--hnsw-n`` vectors, each ``--ef-search``: time, recall@k against exact
  search over that same subset.

Times are medians of ``--iters`` runs after a warm-up, with ``--threads`` OpenMP / torch threads; exact search also
reports process CPU seconds per thread (what it needs on idle cores) and the load average, since wall time on a
shared machine includes waiting for the CPU. Exact search uses bind's BLAS settings for faiss
(:func:`bind.retrieval.index.faiss_blas_search`); ``--faiss-defaults`` also times faiss's own.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch

from bind.bench.common import environment, write_json

EXACT_GOAL_S = 2.0


def clustered_unit_vectors(
    n: int, dim: int, clusters: int, noise: float, seed: int, centres: np.ndarray | None = None, chunk: int = 131_072
) -> tuple[np.ndarray, np.ndarray]:
    """``[n, dim]`` float32 unit vectors ``normalize(centre + noise * g / sqrt(dim))`` (``g`` standard normal), and
    the centres (drawn from ``seed`` unless given)."""
    gen = torch.Generator().manual_seed(seed)
    if centres is None:
        centres = torch.nn.functional.normalize(torch.randn(clusters, dim, generator=gen), dim=1).numpy()
    c = torch.from_numpy(centres)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        assign = torch.randint(0, len(c), (m,), generator=gen)
        x = c[assign] + noise * torch.randn(m, dim, generator=gen) / dim**0.5
        out[start : start + m] = torch.nn.functional.normalize(x, dim=1).numpy()
    return out, centres


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over queries of |found top-k ∩ exact top-k| / k."""
    return float(np.mean([len(set(f[:k].tolist()) & set(e[:k].tolist())) / k for f, e in zip(found, exact)]))


def _median_time(fn, iters: int) -> float:
    return _median_times(fn, iters)[0]


def _median_times(fn, iters: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds (all threads) per call, after one warm-up call. On a
    shared machine wall time includes waiting for the CPU; CPU seconds / threads is what the call needs on idle
    cores."""
    fn()
    walls, cpus = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def run(args: argparse.Namespace) -> dict:
    import faiss

    from bind.retrieval.index import brute_force_topk, faiss_blas_search

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    k = args.k
    t0 = time.perf_counter()
    data, centres = clustered_unit_vectors(args.n, args.dim, args.clusters, args.noise, args.seed)
    queries, _ = clustered_unit_vectors(args.queries, args.dim, args.clusters, args.noise, args.seed + 1, centres)
    timing = (queries, k, args.iters)
    result: dict = {
        "data": {
            "n": args.n,
            "dim": args.dim,
            "queries": args.queries,
            "k": k,
            "clusters": args.clusters,
            "noise": args.noise,
            "dtype": "float32",
            "bytes": int(data.nbytes),
            "generate_s": time.perf_counter() - t0,
        }
    }

    # exact: faiss flat vs torch matmul top-k
    flat = faiss.IndexFlatIP(args.dim)
    t0 = time.perf_counter()
    flat.add(data)
    add_s = time.perf_counter() - t0
    with faiss_blas_search():  # what bind.retrieval.Index uses for exact search
        exact_d, exact_i = flat.search(queries, k)
        faiss_s, faiss_cpu_s = _median_times(lambda: flat.search(queries, k), args.iters)
    default_s = _median_time(lambda: flat.search(queries, k), 1) if args.faiss_defaults else None
    flat.reset()  # free its copy of the corpus
    data_t, queries_t = torch.from_numpy(data), torch.from_numpy(queries)
    torch_s = _median_time(lambda: brute_force_topk(queries_t, data_t, k), args.iters)
    t_scores, t_rows = brute_force_topk(queries_t, data_t, k)
    same_ids = float((t_rows.numpy() == exact_i).mean())
    result["exact"] = {
        "index": "IndexFlatIP",
        "threads": args.threads,
        "add_s": add_s,
        "search_s": faiss_s,
        "ms_per_query": 1000 * faiss_s / args.queries,
        "goal_s": EXACT_GOAL_S,
        "meets_goal": faiss_s < EXACT_GOAL_S,
        "search_cpu_s": faiss_cpu_s,
        "search_cpu_s_per_thread": faiss_cpu_s / args.threads,
        "load_average_1min": os.getloadavg()[0],
        "search_s_faiss_default_blas_settings": default_s,
        "torch_matmul_topk_s": torch_s,
        "torch_over_faiss_time": torch_s / faiss_s,
        "ids_equal_torch_fraction": same_ids,
        "max_abs_score_diff_vs_torch": float(np.abs(t_scores.numpy() - exact_d).max()),
    }

    if args.nlist > 0:  # IVF
        nlist = min(args.nlist, args.n)
        ivf = faiss.index_factory(args.dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        sample = data[
            np.sort(np.random.default_rng(args.seed).choice(args.n, min(args.train_size, args.n), replace=False))
        ]
        t0 = time.perf_counter()
        ivf.train(sample)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ivf.add(data)
        ivf_add_s = time.perf_counter() - t0
        cells = faiss.extract_index_ivf(ivf)
        runs = _sweep(ivf, lambda v: setattr(cells, "nprobe", v), "nprobe", args.nprobe, exact_i, faiss_s, timing)
        ivf.reset()
        result["ivf"] = {
            "nlist": nlist,
            "train_size": len(sample),
            "train_s": train_s,
            "add_s": ivf_add_s,
            "runs": runs,
        }

    if args.hnsw:
        n_h = min(args.hnsw_n or args.n, args.n)
        sub = data[:n_h]
        _, sub_exact = brute_force_topk(queries_t, torch.from_numpy(sub), k)
        flat_sub = faiss.IndexFlatIP(args.dim)
        flat_sub.add(sub)
        with faiss_blas_search():
            sub_exact_s = _median_time(lambda: flat_sub.search(queries, k), args.iters)
        flat_sub.reset()
        hnsw = faiss.IndexHNSWFlat(args.dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = args.ef_construction
        t0 = time.perf_counter()
        hnsw.add(sub)
        build_s = time.perf_counter() - t0
        set_ef = lambda v: setattr(hnsw.hnsw, "efSearch", v)  # noqa: E731
        runs = _sweep(hnsw, set_ef, "ef_search", args.ef_search, sub_exact.numpy(), sub_exact_s, timing)
        hnsw.reset()
        result["hnsw"] = {
            "n": n_h,
            "M": args.hnsw_m,
            "ef_construction": args.ef_construction,
            "build_s": build_s,
            "exact_search_s_same_n": sub_exact_s,
            "runs": runs,
        }
    return result


def _sweep(index, set_value, name: str, values: list, exact_ids, exact_s: float, timing) -> list[dict[str, Any]]:
    """Search time, recall@k and speed-up over exact search (``exact_ids`` found in ``exact_s``) of ``index`` for each
    ``set_value(v)`` of ``values`` (recorded as ``name``); ``timing``: ``(queries, k, iters)``."""
    queries, k, iters = timing
    runs = []
    for v in values:
        set_value(v)
        _, found = index.search(queries, k)
        sec = _median_time(lambda: index.search(queries, k), iters)
        runs.append(
            {
                name: v,
                "search_s": sec,
                "ms_per_query": 1000 * sec / len(queries),
                f"recall@{k}": recall_at_k(found, exact_ids, k),
                "speedup_vs_exact": exact_s / sec,
            }
        )
    return runs


def _run(args: argparse.Namespace) -> int:
    res = run(args)
    write_json({"suite": "retrieval", "env": environment(), "result": res}, args.json)
    return 0


def add_suite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrieval", help="exact / IVF / HNSW search time and recall@k")
    p.add_argument("--n", type=int, default=1_000_000, help="corpus size")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("-k", "--k", type=int, default=10)
    p.add_argument("--clusters", type=int, default=1000, help="centres of the synthetic corpus")
    p.add_argument("--noise", type=float, default=2.0, help="noise radius relative to the unit centres")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--nlist", type=int, default=1024, help="IVF cells (0 skips IVF)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--train-size", type=int, default=100_000, help="IVF k-means sample")
    p.add_argument("--hnsw", action="store_true", help="also benchmark HNSW")
    p.add_argument("--hnsw-n", type=int, default=None, help="HNSW corpus size (first N vectors; default --n)")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument(
        "--faiss-defaults",
        action="store_true",
        help="also time exact search with faiss's own BLAS settings (slow in faiss 1.15)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the result JSON here")
    p.set_defaults(func=_run)
