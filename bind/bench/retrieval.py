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
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bind.bench.common import environment, suite_command

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


def run_retrieval_bench(
    n: int = 1_000_000,
    dim: int = 768,
    queries: int = 100,
    k: int = 10,
    clusters: int = 1000,
    noise: float = 2.0,
    threads: int = 2,
    iters: int = 3,
    nlist: int = 1024,
    nprobe: Sequence[int] = (8, 16, 32, 64),
    train_size: int = 100_000,
    hnsw: bool = False,
    hnsw_n: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 40,
    ef_search: Sequence[int] = (16, 32, 64, 128),
    faiss_defaults: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the suite and return its JSON-ready result (see the module docstring).

    Args:
        n: corpus size
        dim: vector dimensions
        queries: query vectors
        k: neighbours per query
        clusters: centres of the synthetic corpus
        noise: noise radius relative to the unit centres
        threads: OpenMP / torch threads
        iters: timed searches (median)
        nlist: IVF cells (0 skips IVF)
        nprobe: IVF cells visited per query, one run each
        train_size: IVF k-means sample
        hnsw: also measure HNSW
        hnsw_n: HNSW corpus size (the first N vectors; default: n)
        hnsw_m: HNSW links per node
        ef_construction: HNSW build breadth
        ef_search: HNSW search breadths, one run each
        faiss_defaults: also time exact search with faiss's own BLAS settings (slow in faiss 1.15)
        seed: seed of the corpus and queries
    """
    import faiss

    from bind.retrieval.index import brute_force_topk, faiss_blas_search

    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data, centres = clustered_unit_vectors(n, dim, clusters, noise, seed)
    query_vectors, _ = clustered_unit_vectors(queries, dim, clusters, noise, seed + 1, centres)
    timing = (query_vectors, k, iters)
    result: dict = {
        "data": {
            "n": n,
            "dim": dim,
            "queries": queries,
            "k": k,
            "clusters": clusters,
            "noise": noise,
            "dtype": "float32",
            "bytes": int(data.nbytes),
            "generate_s": time.perf_counter() - t0,
        }
    }

    # exact: faiss flat vs torch matmul top-k
    flat = faiss.IndexFlatIP(dim)
    t0 = time.perf_counter()
    flat.add(data)
    add_s = time.perf_counter() - t0
    with faiss_blas_search():  # what bind.retrieval.Index uses for exact search
        exact_d, exact_i = flat.search(query_vectors, k)
        faiss_s, faiss_cpu_s = _median_times(lambda: flat.search(query_vectors, k), iters)
    default_s = _median_time(lambda: flat.search(query_vectors, k), 1) if faiss_defaults else None
    flat.reset()  # free its copy of the corpus
    data_t, queries_t = torch.from_numpy(data), torch.from_numpy(query_vectors)
    torch_s = _median_time(lambda: brute_force_topk(queries_t, data_t, k), iters)
    t_scores, t_rows = brute_force_topk(queries_t, data_t, k)
    same_ids = float((t_rows.numpy() == exact_i).mean())
    result["exact"] = {
        "index": "IndexFlatIP",
        "threads": threads,
        "add_s": add_s,
        "search_s": faiss_s,
        "ms_per_query": 1000 * faiss_s / queries,
        "goal_s": EXACT_GOAL_S,
        "meets_goal": faiss_s < EXACT_GOAL_S,
        "search_cpu_s": faiss_cpu_s,
        "search_cpu_s_per_thread": faiss_cpu_s / threads,
        "load_average_1min": os.getloadavg()[0],
        "search_s_faiss_default_blas_settings": default_s,
        "torch_matmul_topk_s": torch_s,
        "torch_over_faiss_time": torch_s / faiss_s,
        "ids_equal_torch_fraction": same_ids,
        "max_abs_score_diff_vs_torch": float(np.abs(t_scores.numpy() - exact_d).max()),
    }

    if nlist > 0:  # IVF
        nlist = min(nlist, n)
        ivf = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        sample = data[np.sort(np.random.default_rng(seed).choice(n, min(train_size, n), replace=False))]
        t0 = time.perf_counter()
        ivf.train(sample)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ivf.add(data)
        ivf_add_s = time.perf_counter() - t0
        cells = faiss.extract_index_ivf(ivf)
        runs = _sweep(ivf, lambda v: setattr(cells, "nprobe", v), "nprobe", nprobe, exact_i, faiss_s, timing)
        ivf.reset()
        result["ivf"] = {
            "nlist": nlist,
            "train_size": len(sample),
            "train_s": train_s,
            "add_s": ivf_add_s,
            "runs": runs,
        }

    if hnsw:
        n_h = min(hnsw_n or n, n)
        sub = data[:n_h]
        _, sub_exact = brute_force_topk(queries_t, torch.from_numpy(sub), k)
        flat_sub = faiss.IndexFlatIP(dim)
        flat_sub.add(sub)
        with faiss_blas_search():
            sub_exact_s = _median_time(lambda: flat_sub.search(query_vectors, k), iters)
        flat_sub.reset()
        graph = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        t0 = time.perf_counter()
        graph.add(sub)
        build_s = time.perf_counter() - t0
        set_ef = lambda v: setattr(graph.hnsw, "efSearch", v)  # noqa: E731
        runs = _sweep(graph, set_ef, "ef_search", ef_search, sub_exact.numpy(), sub_exact_s, timing)
        graph.reset()
        result["hnsw"] = {
            "n": n_h,
            "M": hnsw_m,
            "ef_construction": ef_construction,
            "build_s": build_s,
            "exact_search_s_same_n": sub_exact_s,
            "runs": runs,
        }
    return {"suite": "retrieval", "env": environment(), "result": result}


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


def add_suite(sub: argparse._SubParsersAction) -> None:
    suite_command(sub, "retrieval", run_retrieval_bench, "exact / IVF / HNSW search time and recall@k")
