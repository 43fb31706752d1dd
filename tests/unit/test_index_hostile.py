"""Index directories as hostile input and concurrent writers.

* A fuzz test over corrupted index directories (truncations, bit flips, wrong JSON types, unknown keys, a pickle
  as vectors, ``ntotal`` 2^40, counts that disagree, path escapes through ``..``, absolute names and symlinks):
  every case is a clean load or one :class:`BindIndexError` line naming the file, never another exception, and
  no file outside the directory is ever opened (``open`` / ``faiss.read_index`` / ``safe_open`` are spied).
* The writer lock: a second writer waits (with one message) or fails fast; temporaries of dead writers (a
  SIGKILLed ``atomic_directory``) are removed by the next writer, a live writer's are kept.
"""

from __future__ import annotations

import builtins
import copy
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bind.retrieval import index as index_module
from bind.retrieval.index import BindIndexError, Index, IndexBusyError, IndexSpec, index_writer, lock_path
from bind.retrieval.model_info import ModelInfo

DIM = 8
MODEL = ModelInfo("bind-tiny", "/models/a", "aaaa", DIM)
REPO = Path(__file__).resolve().parents[2]


def _index(backend: str = "faiss", kind: str = "flat", n: int = 6) -> Index:
    x = F.normalize(torch.randn(n, DIM, generator=torch.Generator().manual_seed(0)), dim=1)
    index = Index(MODEL, IndexSpec(kind=kind, backend=backend, nlist=2, hnsw_m=4))
    mods = ["image"] * (n // 2) + ["audio"] * (n - n // 2)
    index.add(x, [f"r{i}" for i in range(n)], [f"/data/{i}.png" for i in range(n)], mods)
    return index


class _Spy:
    """Records every path opened through Python, faiss and safetensors while active."""

    def __init__(self, monkeypatch) -> None:
        self.paths: list[Path] = []
        real_open, real_read, real_safe = builtins.open, index_module._faiss().read_index, None
        import safetensors

        real_safe = safetensors.safe_open

        def spy_open(file, *a, **k):
            if isinstance(file, (str, os.PathLike)):
                self.paths.append(Path(file))
            return real_open(file, *a, **k)

        def spy_read(path, *a, **k):
            self.paths.append(Path(path))
            return real_read(path, *a, **k)

        def spy_safe(path, *a, **k):
            self.paths.append(Path(path))
            return real_safe(path, *a, **k)

        monkeypatch.setattr(builtins, "open", spy_open)
        monkeypatch.setattr(io, "open", spy_open)
        monkeypatch.setattr(index_module._faiss(), "read_index", spy_read)
        monkeypatch.setattr(safetensors, "safe_open", spy_safe)

    def outside(self, directory: Path) -> list[Path]:
        root = directory.resolve()
        return [p for p in self.paths if root not in p.resolve().parents]


def _cases(directory: Path) -> list[tuple[str, object]]:
    """(name, mutation) pairs; a mutation is applied to a fresh copy of the index directory."""
    meta = json.loads((directory / "metadata.json").read_text())
    data = [p.name for p in sorted(directory.iterdir()) if p.name != "metadata.json"]
    cases: list[tuple[str, object]] = []

    def set_meta(fn, drop_checksums: bool = False):
        def apply(d: Path) -> None:
            m = copy.deepcopy(meta)
            fn(m)
            if drop_checksums:
                m.pop("checksums", None)
            (d / "metadata.json").write_text(json.dumps(m))

        return apply

    def set_bytes(name: str, fn, drop_checksums: bool = False):
        def apply(d: Path) -> None:
            (d / name).write_bytes(fn((d / name).read_bytes()))
            if drop_checksums:
                set_meta(lambda m: None, True)(d)

        return apply

    for name in ["metadata.json", *data]:  # truncations and bit flips of every file, with and without checksums
        size = (directory / name).stat().st_size
        for cut in sorted({0, 1, 4, 20, 44, size // 2, size - 1}):
            if 0 <= cut < size:
                cases.append((f"truncate {name} at {cut}", set_bytes(name, lambda b, c=cut: b[:c])))
                if name != "metadata.json":
                    cases.append(
                        (
                            f"truncate {name} at {cut}, no checksums",
                            set_bytes(name, lambda b, c=cut: b[:c], drop_checksums=True),
                        )
                    )
        for pos in sorted({0, 3, 5, 9, 13, 40, size // 3, size // 2, size - 2}):
            if 0 <= pos < size:
                flip = lambda b, p=pos: b[:p] + bytes([b[p] ^ 0x10]) + b[p + 1 :]
                cases.append((f"bit flip {name} at {pos}", set_bytes(name, flip)))
                if name != "metadata.json":
                    cases.append((f"bit flip {name} at {pos}, no checksums", set_bytes(name, flip, True)))
    # wrong JSON types and values
    cases.append(("metadata is a list", lambda d: (d / "metadata.json").write_text("[1, 2]")))
    cases.append(("metadata is deep", lambda d: (d / "metadata.json").write_text("[" * 100_000)))
    cases.append(("metadata not utf-8", lambda d: (d / "metadata.json").write_bytes(b"\xff\xfe{}")))
    for key in ["model", "spec", "files", "count", "dim", "modalities", "version", "empty_faiss", "checksums"]:
        for value in [[], "x", None, -1, 2**40, {"a": 1}, True]:
            cases.append((f"{key} = {value!r}", set_meta(lambda m, k=key, v=value: m.__setitem__(k, v))))
        cases.append((f"no {key}", set_meta(lambda m, k=key: m.pop(k, None))))
    for key in ["name", "path", "fingerprint", "embed_dim"]:
        cases.append((f"model.{key} = []", set_meta(lambda m, k=key: m["model"].__setitem__(k, []))))
    cases.append(("unknown spec key", set_meta(lambda m: m["spec"].__setitem__("evil", 1))))
    cases.append(("spec kind unknown", set_meta(lambda m: m["spec"].__setitem__("kind", "lsh"))))
    cases.append(("unknown top-level key", set_meta(lambda m: m.__setitem__("__class__", "os.system"))))
    cases.append(("count disagrees", set_meta(lambda m: m.__setitem__("count", m["count"] + 1))))
    cases.append(("count disagrees, no checks", set_meta(lambda m: m.__setitem__("count", 3), True)))
    cases.append(("modalities disagree", set_meta(lambda m: m.__setitem__("modalities", {"image": 6}))))
    cases.append(("dim disagrees", set_meta(lambda m: m.update(dim=16, model={**m["model"], "embed_dim": 16}))))
    cases.append(("checksum wrong", set_meta(lambda m: m["checksums"].update({k: "0" * 32 for k in m["checksums"]}))))
    # path escapes: parent directories, absolute paths, nested paths, symlinks out of the directory
    for key in list(meta["files"]):
        for evil in [
            "../../etc/passwd",
            "../outside/secret.txt",
            "/etc/passwd",
            "sub/../x",
            "..",
            ".",
            "entries-0.jsonl/../../outside/secret.txt",
            f"./{meta['files'][key]}",
            "",
        ]:
            cases.append((f"files.{key} = {evil!r}", set_meta(lambda m, k=key, e=evil: m["files"].__setitem__(k, e))))
            cases.append(
                (
                    f"files.{key} = {evil!r}, no checksums",
                    set_meta(lambda m, k=key, e=evil: m["files"].__setitem__(k, e), True),
                )
            )

        def symlink_out(d: Path, k=key) -> None:
            target = d / meta["files"][k]
            target.unlink()
            target.symlink_to(d.parent / "outside" / "secret.txt")

        cases.append((f"files.{key} is a symlink out", symlink_out))
        cases.append((f"files.{key} missing", lambda d, k=key: (d / meta["files"][k]).unlink()))
        cases.append(
            (
                f"files.{key} is a directory",
                lambda d, k=key: ((d / meta["files"][k]).unlink(), (d / meta["files"][k]).mkdir()),
            )
        )
    cases.append(
        (
            "metadata is a symlink out",
            lambda d: (
                (d / "metadata.json").unlink(),
                (d / "metadata.json").symlink_to(d.parent / "outside" / "metadata.json"),
            ),
        )
    )
    cases.append(
        (
            "pickle as data",
            lambda d: [
                (d / n).write_bytes(pickle.dumps({"vectors": torch.zeros(6, DIM)}))
                for n in data
                if not n.startswith("entries")
            ],
        )
    )
    cases.append(
        (
            "pickle as data, no checksums",
            lambda d: (
                [
                    (d / n).write_bytes(pickle.dumps({"vectors": torch.zeros(6, DIM)}))
                    for n in data
                    if not n.startswith("entries")
                ]
                and set_meta(lambda m: None, True)(d)
            ),
        )
    )
    cases.append(
        (
            "entries hold a list",
            set_bytes(next(n for n in data if n.startswith("entries")), lambda b: b"[1]\n" * 6, True),
        )
    )
    cases.append(
        (
            "entries with extra key",
            set_bytes(
                next(n for n in data if n.startswith("entries")), lambda b: b.replace(b'"id"', b'"x": 1, "id"', 1), True
            ),
        )
    )
    cases.append(
        (
            "entries one short",
            set_bytes(
                next(n for n in data if n.startswith("entries")), lambda b: b"".join(b.splitlines(True)[:-1]), True
            ),
        )
    )
    cases.append(
        (
            "entries one extra",
            set_bytes(next(n for n in data if n.startswith("entries")), lambda b: b + b.splitlines(True)[0], True),
        )
    )
    faiss_file = next((n for n in data if n.endswith(".faiss")), None)
    if faiss_file:

        def ntotal(b: bytes, value: int = 2**40) -> bytes:
            return b[:8] + struct.pack("<q", value) + b[16:]

        cases.append(("faiss ntotal 2^40, no checksums", set_bytes(faiss_file, ntotal, True)))
        cases.append(
            (
                "faiss ntotal 2^40 + metadata count 2^40",
                lambda d: (
                    set_bytes(faiss_file, ntotal)(d),
                    set_meta(lambda m: m.update(count=2**40, modalities={"x": 2**40}), True)(d),
                ),
            )
        )
        cases.append(
            ("faiss code size 2^40", set_bytes(faiss_file, lambda b: b[:37] + struct.pack("<Q", 2**40) + b[45:], True))
        )
        cases.append(
            ("faiss d = 2^31-1", set_bytes(faiss_file, lambda b: b[:4] + struct.pack("<i", 2**31 - 1) + b[8:], True))
        )
        cases.append(
            (
                "faiss NaN vectors",
                set_bytes(faiss_file, lambda b: b[:45] + struct.pack("<f", float("nan")) + b[49:], True),
            )
        )
    return cases


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("backend,kind", [("faiss", "flat"), ("torch", "flat"), ("faiss", "hnsw")])
def test_fuzz_corrupted_index_directories(tmp_path, monkeypatch, backend, kind):
    good = tmp_path / "good"
    _index(backend, kind).save(good)
    reference = Index.load(good)
    assert len(reference) == 6
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SENTINEL outside the index\n")
    (outside / "metadata.json").write_text((good / "metadata.json").read_text())
    cases = _cases(good)
    assert len(cases) > 150
    spy = _Spy(monkeypatch)
    outcomes = {"error": 0, "loaded": 0}
    for i, (name, mutate) in enumerate(cases):
        d = _copy(good, tmp_path / f"case{i}")
        mutate(d)
        spy.paths.clear()
        try:
            loaded = Index.load(d)
        except BindIndexError as e:
            msg = str(e)
            assert "\n" not in msg and msg.startswith(str(d)), (name, msg)
            outcomes["error"] += 1
        except Exception as e:  # noqa: BLE001 - the assertion: nothing but BindIndexError
            pytest.fail(f"{name}: {type(e).__name__}: {e}")
        else:
            outcomes["loaded"] += 1
            assert len(loaded) == 6, name
            if "no checksums" not in name and not name.startswith("bit flip metadata.json"):
                # with checksums, data files load only unchanged in content (e.g. a dropped final newline)
                assert [loaded.entry(r) for r in range(6)] == [reference.entry(r) for r in range(6)], name
                assert kind != "flat" or torch.equal(loaded.vectors(), reference.vectors()), name
        assert not spy.outside(d), (name, spy.outside(d))
    assert outcomes["error"] > 0.9 * len(cases), outcomes


def test_path_escape_is_named_and_never_read(tmp_path, monkeypatch):
    directory = tmp_path / "idx"
    _index().save(directory)
    meta = json.loads((directory / "metadata.json").read_text())
    meta["files"]["index"] = "../../etc/passwd"
    (directory / "metadata.json").write_text(json.dumps(meta))
    spy = _Spy(monkeypatch)
    with pytest.raises(BindIndexError, match=r"'files.index' '../../etc/passwd' is not a file name of this index"):
        Index.load(directory)
    assert not spy.outside(directory)


def test_search_on_a_tampered_index_is_one_line(tmp_path):
    directory = tmp_path / "idx"
    _index().save(directory)
    meta = json.loads((directory / "metadata.json").read_text())
    meta["spec"]["evil"] = 1
    (directory / "metadata.json").write_text(json.dumps(meta))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-m", "bind", "search", "--index", str(directory), "--text", "a dog"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"bindspace search: error: {directory}/metadata.json: unknown 'spec' "
        "keys ['evil']; known: ['backend', 'ef_construction', 'ef_search', "
        "'hnsw_m', 'kind', 'nlist', 'nprobe', 'train_size']"
    ]
    r = subprocess.run(
        [sys.executable, "-m", "bind", "search", "--index", str(directory), "--text", "a dog", "--debug"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 1 and "Traceback" in r.stderr


# --- writer lock ------------------------------------------------------------------------------------------------------
def test_second_writer_waits_or_fails_fast(tmp_path):
    directory = tmp_path / "idx"
    _index().save(directory)
    held, release = threading.Event(), threading.Event()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = textwrap.dedent(f"""
        import sys, time
        from bind.retrieval.index import index_writer
        with index_writer({str(directory)!r}):
            print("held", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(IndexBusyError, match="another process is writing this index"):
            _index(n=2).save(directory, wait=False)
        messages: list[str] = []

        def writer() -> None:
            with index_writer(directory, on_wait=messages.append):
                held.set()
                release.wait(10)

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.5)
        assert not held.is_set() and len(messages) == 1 and "waiting for another process writing" in messages[0]
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert held.wait(30)
        release.set()
        t.join(10)
    finally:
        proc.kill()
        proc.wait()
    assert lock_path(directory) == tmp_path / ".idx.lock"


def test_dead_writer_temporaries_are_removed_live_ones_kept(tmp_path):
    directory = tmp_path / "idx"
    child = textwrap.dedent(f"""
        import time
        from bind.io import atomic_directory
        with atomic_directory({str(directory)!r}) as tmp:
            (tmp / "index-0.faiss").write_bytes(b"x" * 100_000)
            print(tmp.name, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    name = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)  # like kill -9 during `index build`
    proc.wait()
    assert (tmp_path / name).is_dir() and name.startswith(".idx.tmp-")
    live = tmp_path / f".idx.tmp-{os.getpid()}-live"
    live.mkdir()
    other = tmp_path / ".other.tmp-999999999-x"
    other.mkdir()
    _index().save(directory)
    assert not (tmp_path / name).exists()  # the dead writer's 100 KB directory is gone
    assert live.is_dir() and other.is_dir()  # a live writer's and another target's temporaries are kept
    (directory / ".entries-abc.jsonl.tmp-999999999-dead").write_text("x")
    _index(n=3).save(directory)
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) == []
    assert len(Index.load(directory)) == 3


def test_readers_never_fail_while_a_writer_commits(tmp_path):
    """A save deletes the data files the previous metadata named; a reader that read that metadata retries."""
    directory = tmp_path / "idx"
    _index(n=200).save(directory)
    stop, errors = threading.Event(), []

    def writer() -> None:
        n = 200
        while not stop.is_set():
            n += 1
            _index(n=n).save(directory)

    t = threading.Thread(target=writer)
    t.start()
    try:
        loads = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                assert len(Index.load(directory)) >= 200
                loads += 1
            except BindIndexError as e:
                errors.append(str(e))
    finally:
        stop.set()
        t.join(30)
    assert not errors and loads > 5, (errors[:3], loads)


def test_tampered_embeddings_files_are_one_error(tmp_path):
    from bind.errors import BindError
    from bind.retrieval.embed import EmbeddingSet

    x = F.normalize(torch.randn(3, DIM), dim=1)
    path = EmbeddingSet(x, ["a", "b", "c"], ["1", "2", "3"], "image", MODEL).save(tmp_path / "e.safetensors")
    side = path.with_suffix(".json")
    good = json.loads(side.read_text())
    assert EmbeddingSet.load(path).ids == ["a", "b", "c"]
    for change in ({"ids": ["a"]}, {"model": []}, {"ids": "abc"}, {"model": {**good["model"], "embed_dim": 4}}):
        side.write_text(json.dumps({**good, **change}))
        with pytest.raises(BindError, match=str(tmp_path)):
            EmbeddingSet.load(path)
    side.write_text("[1]")
    with pytest.raises(BindError, match="not a bind embeddings sidecar"):
        EmbeddingSet.load(path)
    side.write_text(json.dumps(good))
    path.write_bytes(pickle.dumps({"embeddings": x}))
    with pytest.raises(BindError, match="not a readable embeddings file"):
        EmbeddingSet.load(path)
