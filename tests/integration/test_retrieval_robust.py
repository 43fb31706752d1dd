"""Retrieval commands as a user runs them (subprocesses, default flags) on hostile inputs (issue #14, #13 item 7):

* a decompression-bomb PNG, a truncated mp4, a zero-byte wav and a text file named ``.png`` among good media:
  ``embed``, ``index build`` and ``eval`` finish, list exactly those as skipped and embed every good one;
* ``eval`` reports a pair no item holds (image:depth) as skipped and writes the rest; a one-class label is n/a;
* bad command lines are one line naming the argument, exit 1, no traceback;
* two concurrent ``index add`` processes, 20 times: the index always loads and holds every row of both.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from media import truncate, write_video

from bind.retrieval.embed import EmbeddingSet
from bind.retrieval.index import Index

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
BAD = {
    "bomb": ("image", "bomb.png"),
    "textpng": ("image", "notes.png"),
    "truncmp4": ("video", "cut.mp4"),
    "emptywav": ("audio", "empty.wav"),
}


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A valid PNG header claiming ``width x height`` grey pixels over a few bytes of data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def bindspace(*argv, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bind", *map(str, argv)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=timeout,
    )


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved tiny model and a manifest of 4 good scenes (depth only on 0-1, image only on 2-3, one label) plus
    4 records whose only medium is bad."""
    from bind_world import WorldConfig, generate

    import bind

    root = tmp_path_factory.mktemp("robust")
    torch.manual_seed(0)
    bind.create_model("bind-tiny").save_pretrained(root / "model")
    manifest = generate(root / "world", n=4, seed=0, workers=1, config=WorldConfig(size=32, frames=8))
    media = root / "world" / "media"
    bomb_png(media / "bomb.png")
    (media / "notes.png").write_text("this is a text file, not a picture\n")
    truncate(
        write_video(media / "whole.mp4", torch.randint(0, 255, (16, 32, 32, 3), dtype=torch.uint8).numpy()),
        media / "cut.mp4",
        keep=0.4,
    )
    (media / "whole.mp4").unlink()
    (media / "empty.wav").write_bytes(b"")
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for i, r in enumerate(records):
        r.pop("depth" if i < 2 else "image")  # no item holds both image and depth
        r["label"] = "thing"  # one class
    for rid, (modality, name) in BAD.items():
        records.append({"id": rid, "text": f"a record whose {modality} is bad", modality: f"media/{name}"})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"root": root, "model": root / "model", "manifest": manifest, "media": media}


def test_embed_and_index_build_skip_exactly_the_bad_files(world, tmp_path):
    out = tmp_path / "image.safetensors"
    r = bindspace(
        "embed", "--model", world["model"], "--modality", "image", "--manifest", world["manifest"], "--out", out
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    es = EmbeddingSet.load(out)
    assert es.ids == ["000000", "000001"]  # every good image
    assert sorted(s["id"] for s in es.skipped) == ["bomb", "textpng"]
    bomb = next(s for s in es.skipped if s["id"] == "bomb")["reason"]
    assert "claims 10000000000 pixels" in bomb and "max_pixels" in bomb, bomb
    listed = sorted(
        line.split()[1].rstrip(":")
        for line in r.stderr.splitlines()
        if line.startswith("skipped ") and line.split()[1].endswith(":")
    )
    assert listed == ["bomb", "textpng"], r.stderr

    idx = tmp_path / "idx"
    r = bindspace(
        "index",
        "build",
        "--model",
        world["model"],
        "--modality",
        "image",
        "video",
        "audio",
        "--manifest",
        world["manifest"],
        "--out",
        idx,
    )
    assert r.returncode == 0, r.stderr
    listed = sorted(
        line.split()[1].rstrip(":")
        for line in r.stderr.splitlines()
        if line.startswith("skipped ") and line.split()[1].endswith(":")
    )
    assert listed == ["bomb", "emptywav", "textpng", "truncmp4"], r.stderr
    index = Index.load(idx)
    assert index.modality_counts() == {"image": 2, "video": 4, "audio": 4}
    assert not any(i in BAD for i in index.ids)
    assert not [p for p in idx.parent.iterdir() if ".tmp-" in p.name]


def test_eval_skips_bad_files_and_empty_pairs_and_flags_one_class(world, tmp_path):
    out = tmp_path / "results"
    r = bindspace("eval", "--model", world["model"], "--manifest", world["manifest"], "--out", out)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    listed = sorted(
        line.split()[1] + line.split()[2]
        for line in r.stderr.splitlines()
        if line.startswith("skipped ") and line.split()[2].startswith("(")
    )
    assert listed == ["bomb(image):", "emptywav(audio):", "textpng(image):", "truncmp4(video):"], r.stderr
    res = json.loads((out / "retrieval.json").read_text())
    assert set(res["skipped_pairs"]) == {"image:depth", "depth:image"}
    assert "skipped pair image:depth: no manifest item holds both" in r.stderr
    assert "text:image" in res["pairs"] and "depth:image" not in res["pairs"] and "audio:video" in res["pairs"]
    assert sorted(s["id"] for ss in res["skipped"].values() for s in ss) == sorted(BAD)
    assert res["pairs"]["text:video"]["num_queries"] == 4  # every good video was embedded
    zs = json.loads((out / "zeroshot_image.json").read_text())
    assert zs["metrics"]["acc1"] is None and zs["status"].startswith("n/a: only one class ('thing')")
    assert "n/a" in r.stdout and "1.000" not in r.stdout.split("zero-shot")[-1]


def test_bad_command_lines_are_one_line_errors(world, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = bindspace(
        "index", "build", "--model", world["model"], "--modality", "image", "--inputs", empty, "--out", tmp_path / "idx"
    )
    _one_line_error(r, "bindspace index build: error:", f"--inputs {empty}", "no image files")
    assert not (tmp_path / "idx").exists()
    idx = tmp_path / "good"
    assert (
        bindspace(
            "index",
            "build",
            "--model",
            world["model"],
            "--modality",
            "image",
            "--inputs",
            world["media"] / "000002.png",
            "--out",
            idx,
            "-q",
        ).returncode
        == 0
    )
    _one_line_error(bindspace("search", "--index", idx, "--text", ""), "--text ''", "give words")
    _one_line_error(
        bindspace("search", "--index", idx, "--file", "image:" + str(world["media"] / "bomb.png")),
        "--file",
        "max_pixels",
    )
    _one_line_error(
        bindspace("search", "--index", tmp_path / "nope", "--text", "a dog"), "nope", "no such index directory"
    )
    _one_line_error(
        bindspace("index", "add", "--index", idx, "--modality", "image", "--inputs", world["media"] / "notes.png"),
        "bindspace index add: error:",
        "nothing to index",
        "every source was skipped",
    )
    _one_line_error(
        bindspace(
            "embed",
            "--model",
            world["model"],
            "--modality",
            "image",
            "--inputs",
            world["media"] / "bomb.png",
            "--out",
            tmp_path / "e.safetensors",
        ),
        "none of the 1 image sources could be embedded",
    )
    assert not (tmp_path / "e.safetensors").exists()


@pytest.mark.slow
def test_concurrent_index_add_never_loses_rows(tmp_path):
    """Two ``index add`` processes started together, 12 times (4 trials at a time): the index always loads and
    holds every row of both. Without the writer lock this lost one writer's rows or the whole index. (12, from 20:
    the 40 process starts took 149 s, a tenth of the suite, on a slow 2-core machine.)"""
    import torch.nn.functional as F

    from bind.retrieval.model_info import ModelInfo

    info, n = ModelInfo("bind-tiny", "bind-tiny", "0" * 24, 16), 5000  # rows enough for the saves to overlap
    files = {}
    for name in ("base", "a", "b"):
        x = F.normalize(torch.randn(n, 16, generator=torch.Generator().manual_seed(len(files))), dim=1)
        files[name] = EmbeddingSet(
            x, [f"{name}{i}" for i in range(n)], [f"/data/{name}{i}.png" for i in range(n)], "image", info
        ).save(tmp_path / f"{name}.safetensors")
    base = tmp_path / "base"
    index = Index(info)
    index.add_embeddings(EmbeddingSet.load(files["base"]))
    index.save(base)
    waited, trials = 0, list(range(12))
    while trials:
        batch, trials = trials[:4], trials[4:]
        procs = {}
        for trial in batch:
            shutil.copytree(base, tmp_path / f"idx{trial}")
            procs[trial] = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bind",
                        "index",
                        "add",
                        "--index",
                        str(tmp_path / f"idx{trial}"),
                        "--embeddings",
                        str(files[w]),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=ENV,
                    cwd=REPO,
                )
                for w in ("a", "b")
            ]
        for trial, ps in procs.items():
            for p in ps:
                out, err = p.communicate(timeout=600)
                assert p.returncode == 0 and "Traceback" not in err, (trial, err)
                waited += "waiting for another process writing" in err
            loaded = Index.load(tmp_path / f"idx{trial}")
            assert len(loaded) == 3 * n, (trial, loaded.modality_counts())
            assert sorted(loaded.ids) == sorted(f"{w}{i}" for w in ("base", "a", "b") for i in range(n)), trial
    print(f"12 trials, {waited} writers waited for the lock")
