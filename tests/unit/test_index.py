"""Index: exact search equals a torch matmul top-k, IVF/HNSW recall, incremental add, save/load, refusal of other
models' embeddings, and crash safety of saves (simulated crashes and a SIGKILLed process)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bind.bench.retrieval import clustered_unit_vectors, recall_at_k
from bind.retrieval import index as index_module
from bind.retrieval.index import BindIndexError, Index, IndexSpec, brute_force_topk
from bind.retrieval.model_info import ModelInfo, ModelMismatchError, model_fingerprint

DIM = 32
MODEL = ModelInfo("bind-tiny", "/models/a", "aaaa", DIM)
OTHER = ModelInfo("bind-tiny", "/models/b", "bbbb", DIM)
REPO = Path(__file__).resolve().parents[2]


def _unit(n: int, seed: int, dim: int = DIM) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def _filled(spec: IndexSpec | None = None, n: int = 500, seed: int = 0) -> tuple[Index, torch.Tensor]:
    x = _unit(n, seed)
    index = Index(MODEL, spec)
    index.add(x, [f"r{i}" for i in range(n)], [f"/data/{i}.png" for i in range(n)], "image", MODEL)
    return index, x


def test_exact_faiss_equals_torch_matmul_topk():
    index, x = _filled(n=3000)
    q = _unit(64, seed=1)
    res = index.search(q, k=10)
    ref_scores, ref_rows = (q @ x.T).topk(10, dim=1)
    assert torch.equal(res.rows, ref_rows)
    torch.testing.assert_close(res.scores, ref_scores, atol=1e-5, rtol=0)
    hit = res.hits[3][0]
    assert (hit.rank, hit.row, hit.id, hit.modality) == (1, int(ref_rows[3, 0]), f"r{int(ref_rows[3, 0])}", "image")


def test_torch_backend_and_chunking_equal_faiss():
    faiss_index, x = _filled(n=1000)
    torch_index, _ = _filled(IndexSpec(backend="torch"), n=1000)
    q = _unit(20, seed=2)
    a, b = faiss_index.search(q, 7), torch_index.search(q, 7)
    assert torch.equal(a.rows, b.rows)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
    chunked = brute_force_topk(q, x, 7, chunk=37)
    assert torch.equal(chunked[1], b.rows)
    s, r = brute_force_topk(q, x[:3], 5)
    assert r[:, 3:].eq(-1).all() and torch.isinf(s[:, 3:]).all()
    assert [len(h) for h in torch_index.search(q, 5).hits] == [5] * 20


def test_ivf_full_probe_is_exact_and_approximate_recall():
    data, centres = clustered_unit_vectors(4000, DIM, clusters=40, noise=2.0, seed=0)
    queries, _ = clustered_unit_vectors(50, DIM, clusters=40, noise=2.0, seed=1, centres=centres)
    exact, _ = Index(MODEL), None
    exact.add(data, [str(i) for i in range(len(data))])
    truth = exact.search(queries, 10).rows.numpy()
    ivf = Index(MODEL, IndexSpec(kind="ivf", nlist=32, nprobe=1))
    ivf.add(data, [str(i) for i in range(len(data))])
    assert ivf.nlist_effective == 32
    full = ivf.search(queries, 10, nprobe=32).rows.numpy()
    assert recall_at_k(full, truth, 10) == 1.0
    one = recall_at_k(ivf.search(queries, 10).rows.numpy(), truth, 10)
    assert 0.0 < one <= 1.0
    hnsw = Index(MODEL, IndexSpec(kind="hnsw", hnsw_m=16, ef_search=256, ef_construction=100))
    hnsw.add(data, [str(i) for i in range(len(data))])
    assert recall_at_k(hnsw.search(queries, 10).rows.numpy(), truth, 10) >= 0.95


def test_ivf_with_few_vectors_reduces_nlist():
    index = Index(MODEL, IndexSpec(kind="ivf", nlist=64))
    index.add(_unit(20, 0), [str(i) for i in range(20)])
    assert index.nlist_effective == 20
    assert index.search(_unit(2, 1), 3, nprobe=20).rows.shape == (2, 3)


@pytest.mark.parametrize(
    "spec",
    [
        IndexSpec(),
        IndexSpec(backend="torch"),
        IndexSpec(kind="ivf", nlist=8, nprobe=8),
        IndexSpec(kind="hnsw", hnsw_m=8),
    ],
    ids=["flat", "torch", "ivf", "hnsw"],
)
def test_incremental_add_save_load_roundtrip(tmp_path, spec):
    x = _unit(600, 0)
    once = Index(MODEL, spec)
    once.add(x, [f"r{i}" for i in range(600)], modality="audio")
    twice = Index(MODEL, spec)
    twice.add(x[:400], [f"r{i}" for i in range(400)], modality="audio", model=MODEL)
    twice.save(tmp_path / "idx")
    twice = Index.load(tmp_path / "idx")
    twice.add(x[400:], [f"r{i}" for i in range(400, 600)], modality=["depth"] * 200, model=MODEL)
    twice.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    q = _unit(10, 5)
    assert len(loaded) == 600 and loaded.ids[450] == "r450"
    assert loaded.modality_counts() == {"audio": 400, "depth": 200}
    assert loaded.model == MODEL and loaded.spec == spec
    if spec.kind != "hnsw":  # HNSW graphs depend on insertion batches; exact/IVF results may not
        assert torch.equal(loaded.search(q, 5).rows, once.search(q, 5).rows)
    meta = json.loads((tmp_path / "idx" / "metadata.json").read_text())
    assert meta["count"] == 600 and meta["model"]["fingerprint"] == "aaaa"
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "idx").iterdir()) == sorted(
        ["metadata.json", "entries", "vectors" if spec.backend == "torch" else "index"]
    )


def test_refuses_embeddings_of_another_model_or_dimension(tmp_path):
    index, _ = _filled(n=10)
    with pytest.raises(ModelMismatchError, match=r"/models/b.*built with model.*/models/a"):
        index.add(_unit(2, 1), ["a", "b"], model=OTHER)
    with pytest.raises(ModelMismatchError, match="dimension 16"):
        index.add(_unit(2, 1, dim=16), ["a", "b"])
    with pytest.raises(ModelMismatchError, match="dimension 48"):
        index.add(_unit(2, 1, dim=48), ["a", "b"], model=ModelInfo("bind-base", "bind-base", "cccc", 48))
    with pytest.raises(ModelMismatchError, match="queries come from model"):
        index.search(_unit(1, 1), model=OTHER)
    index.save(tmp_path / "idx")
    with pytest.raises(ModelMismatchError):
        Index.load(tmp_path / "idx").add(_unit(1, 2), ["c"], model=OTHER)
    assert len(Index.load(tmp_path / "idx")) == 10


def test_fingerprint_tells_weights_apart():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 4)
    b = torch.nn.Linear(4, 4)
    assert model_fingerprint(a) != model_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)


def test_crash_before_commit_keeps_previous_index(tmp_path, monkeypatch):
    directory = tmp_path / "idx"
    old, _ = _filled(n=50)
    old.save(directory)
    new, _ = _filled(n=80, seed=1)
    real_replace = os.replace

    def crash_on_commit(src, dst):
        if Path(dst).name == "metadata.json":
            raise KeyboardInterrupt("simulated crash between the data files and the commit")
        real_replace(src, dst)

    monkeypatch.setattr("bind.io.os.replace", crash_on_commit)
    with pytest.raises(KeyboardInterrupt):
        new.save(directory)
    monkeypatch.setattr("bind.io.os.replace", real_replace)
    assert len(list(directory.glob("index-*.faiss"))) == 2  # the new data files were written, not committed
    assert len(Index.load(directory)) == 50

    def crash_mid_write(index, path):
        Path(path).write_bytes(b"half an index")
        raise OSError("disk full")

    monkeypatch.setattr(index_module._faiss(), "write_index", crash_mid_write)
    with pytest.raises(OSError):
        new.save(directory)
    monkeypatch.undo()
    assert len(Index.load(directory)) == 50
    new.save(directory)  # a successful save removes every stale file
    assert len(Index.load(directory)) == 80
    assert len(list(directory.iterdir())) == 3


def test_refuses_to_write_into_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    index, _ = _filled(n=3)
    with pytest.raises(BindIndexError, match="not a bind index"):
        index.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a bind index"):
        Index.load(tmp_path)


_CHILD = textwrap.dedent("""
    import sys, time, torch
    from bind.retrieval.index import Index
    directory = sys.argv[1]
    index = Index.load(directory)
    x = torch.nn.functional.normalize(torch.randn(100_000, index.dim), dim=1)
    ids = [str(i) for i in range(len(x))]
    while True:
        index.add(x, ids, modality="image")
        print("saving", len(index), time.time(), flush=True)
        index.save(directory)
        print("saved", len(index), time.time(), flush=True)
""")


def test_sigkill_during_save_leaves_a_loadable_index(tmp_path):
    directory = tmp_path / "idx"
    _filled(n=10)[0].save(directory)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    counts = {10}
    try:
        started = None
        for line in proc.stdout:
            word, count, stamp = line.split()
            counts.add(int(count))
            if word == "saving" and started is None:
                started = float(stamp)
            elif word == "saved" and started is not None:
                duration = float(stamp) - started
                break
        else:
            pytest.fail(f"child ended early with code {proc.wait()}")
        line = proc.stdout.readline()  # the next save starts
        counts.add(int(line.split()[1]))
        time.sleep(random.Random(0).uniform(0.2, 0.6) * duration)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    index = Index.load(directory)
    assert len(index) in counts
    assert index.search(np.ones((1, DIM), dtype=np.float32), 3).rows.shape == (1, 3)


def test_bench_retrieval_runs_tiny(tmp_path):
    from bind.cli import main

    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "retrieval",
                "--n",
                "3000",
                "--dim",
                "32",
                "--queries",
                "20",
                "--clusters",
                "30",
                "--nlist",
                "16",
                "--nprobe",
                "1",
                "16",
                "--train-size",
                "1000",
                "--hnsw",
                "--hnsw-n",
                "1000",
                "--hnsw-m",
                "8",
                "--ef-search",
                "64",
                "--iters",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())["result"]
    assert res["exact"]["ids_equal_torch_fraction"] == 1.0
    assert res["exact"]["max_abs_score_diff_vs_torch"] < 1e-5
    probes = {r["nprobe"]: r["recall@10"] for r in res["ivf"]["runs"]}
    assert probes[16] == 1.0 and 0.0 < probes[1] <= 1.0
    assert res["hnsw"]["n"] == 1000 and 0.0 < res["hnsw"]["runs"][0]["recall@10"] <= 1.0
