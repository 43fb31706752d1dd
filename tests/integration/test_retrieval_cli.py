"""``bindspace embed`` / ``index build|add`` / ``search`` / ``eval`` end to end on the tiny model and a small procedural
world holding every modality: a search for every (query modality, index modality) pair, bad inputs skipped and
listed, the Lightning path, refusal of another model's embeddings, CLIP_benchmark-style JSON and PNG plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bind.cli import main
from bind.data.manifest import read_manifest
from bind.retrieval.embed import EmbeddingSet
from bind.retrieval.index import Index
from bind.retrieval.metrics import retrieval_metrics

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
N_SCENES = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two saved tiny models (different weights) and a manifest of every modality (``factors.shape`` as class label)
    plus one record whose image is corrupt."""
    from bind_world import WorldConfig, generate

    import bind

    root = tmp_path_factory.mktemp("retrieval")
    torch.manual_seed(0)
    model = bind.create_model("bind-tiny").eval()
    model.save_pretrained(root / "model_a")
    torch.manual_seed(1)
    bind.create_model("bind-tiny").save_pretrained(root / "model_b")
    source = generate(root / "world", n=N_SCENES, seed=0, workers=1, config=WorldConfig(size=32, frames=8))
    lines = [json.loads(line) for line in source.read_text().splitlines()]
    (root / "world" / "media" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    lines.append(
        {
            "id": "broken",
            "split": "test",
            "text": "a broken picture",
            "image": "media/broken.png",
            "factors": {"shape": lines[0]["factors"]["shape"]},
        }
    )
    manifest = root / "world" / "data.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {
        "root": root,
        "model": model,
        "manifest": manifest,
        "records": read_manifest(manifest),
        "modalities": model.modalities,
    }


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_manifest_skips_and_lists_bad_inputs(world, capsys, tmp_path):
    out = tmp_path / "image.safetensors"
    code, stdout, stderr = _run(
        [
            "embed",
            "--model",
            world["root"] / "model_a",
            "--modality",
            "image",
            "--manifest",
            world["manifest"],
            "--out",
            out,
            "-q",
            "--workers",
            "1",
        ],
        capsys,
    )
    assert code == 0, stderr
    assert "skipped broken" in stderr and "image" in stderr
    es = EmbeddingSet.load(out)
    assert es.ids == [f"{i:06d}" for i in range(N_SCENES)]
    assert [s["id"] for s in es.skipped] == ["broken"] and "not a decodable image" in es.skipped[0]["reason"]
    assert es.model.path == str((world["root"] / "model_a").resolve())
    sources = [r.source("image") for r in world["records"][:N_SCENES]]
    torch.testing.assert_close(es.embeddings, world["model"].embed_sources("image", sources), atol=1e-5, rtol=0)

    npz = tmp_path / "two.npz"
    code, _, stderr = _run(
        [
            "embed",
            "--model",
            world["root"] / "model_a",
            "--modality",
            "image",
            "--inputs",
            *sources[:2],
            "--out",
            npz,
            "-q",
        ],
        capsys,
    )
    assert code == 0, stderr
    two = EmbeddingSet.load(npz)
    assert two.ids == [str(s) for s in sources[:2]]
    torch.testing.assert_close(two.embeddings, es.embeddings[:2])


def test_embed_through_lightning_predict_matches(world, capsys, tmp_path):
    plain, lit = tmp_path / "plain.safetensors", tmp_path / "lightning.safetensors"
    common = [
        "--model",
        world["root"] / "model_a",
        "--modality",
        "text",
        "--manifest",
        world["manifest"],
        "-q",
        "--batch-size",
        "4",
    ]
    assert _run(["embed", *common, "--out", plain], capsys)[0] == 0
    code, _, stderr = _run(["embed", *common, "--out", lit, "--devices", "1", "--accelerator", "cpu"], capsys)
    assert code == 0, stderr
    a, b = EmbeddingSet.load(plain), EmbeddingSet.load(lit)
    assert a.ids == b.ids and a.sources == b.sources and len(a) == N_SCENES + 1
    torch.testing.assert_close(a.embeddings, b.embeddings, atol=1e-5, rtol=0)
    assert not (tmp_path / ".lightning.safetensors.shards").exists()


def _query_args(record, modality: str) -> list[str]:
    return ["--text", record.texts()[0]] if modality == "text" else ["--file", f"{modality}:{record.source(modality)}"]


def test_search_every_modality_pair(world, capsys, tmp_path):
    mods, model = world["modalities"], world["model"]
    idx = tmp_path / "idx"
    code, stdout, stderr = _run(
        [
            "index",
            "build",
            "--model",
            world["root"] / "model_a",
            "--modality",
            *mods,
            "--manifest",
            world["manifest"],
            "--out",
            idx,
            "-q",
        ],
        capsys,
    )
    assert code == 0, stderr
    index = Index.load(idx)
    assert set(index.modality_counts()) == set(mods)
    records = world["records"][:N_SCENES]
    gallery = {m: model.embed_sources(m, [r.source(m) if m != "text" else r.texts()[0] for r in records]) for m in mods}
    for q in mods:
        code, stdout, stderr = _run(
            ["search", "--index", idx, *_query_args(records[0], q), "-k", len(index), "--json"], capsys
        )
        assert code == 0, f"{q}: {stderr}"
        hits = json.loads(stdout)["hits"]
        assert {h["modality"] for h in hits} == set(mods), q
        query = gallery[q][0]
        for h in hits:  # every (query, gallery) modality pair: the score is the inner product of the embeddings
            if h["id"] == "broken":
                continue
            expected = float(query @ gallery[h["modality"]][int(h["id"])])
            assert h["score"] == pytest.approx(expected, abs=1e-4), (q, h)
        own = [h for h in hits if h["modality"] == q]
        assert own[0]["id"] == records[0].id and own[0]["score"] == pytest.approx(1.0, abs=1e-4)

    # several inputs: summed unit-norm embeddings, re-normalised; and the rich table
    code, stdout, stderr = _run(
        [
            "search",
            "--index",
            idx,
            "--text",
            "a red cube",
            "--file",
            records[1].source("image"),
            "--modality",
            "image",
            "-k",
            "3",
            "--json",
        ],
        capsys,
    )
    assert code == 0, stderr
    combo = torch.nn.functional.normalize(model.embed_sources("text", ["a red cube"])[0] + gallery["image"][1], dim=0)
    expected = index.search(combo[None], 3).scores[0]
    assert [h["score"] for h in json.loads(stdout)["hits"]] == pytest.approx(expected.tolist(), abs=1e-4)
    code, stdout, _ = _run(["search", "--index", idx, "--text", "a red cube", "-k", "2"], capsys)
    assert code == 0 and "rank" in stdout and "score" in stdout


def test_index_add_and_refusal_of_another_model(world, capsys, tmp_path):
    root, idx = world["root"], tmp_path / "idx"
    sources = [r.source("image") for r in world["records"][:N_SCENES]]
    assert (
        _run(
            [
                "index",
                "build",
                "--model",
                root / "model_a",
                "--modality",
                "image",
                "--inputs",
                *sources[:4],
                "--out",
                idx,
                "--kind",
                "hnsw",
                "--hnsw-m",
                "8",
                "-q",
            ],
            capsys,
        )[0]
        == 0
    )
    code, _, stderr = _run(
        ["index", "add", "--index", idx, "--modality", "image", "--inputs", *sources[4:], "-q"], capsys
    )
    assert code == 0, stderr
    index = Index.load(idx)
    assert len(index) == N_SCENES and index.spec.kind == "hnsw"

    code, _, stderr = _run(
        [
            "index",
            "add",
            "--index",
            idx,
            "--model",
            root / "model_b",
            "--modality",
            "image",
            "--inputs",
            sources[0],
            "-q",
        ],
        capsys,
    )
    assert code == 1 and "different spaces" in stderr and str((root / "model_a").resolve()) in stderr
    code, _, stderr = _run(["search", "--index", idx, "--model", root / "model_b", "--text", "a cube"], capsys)
    assert code == 1 and "different spaces" in stderr
    other = tmp_path / "b.safetensors"
    assert (
        _run(
            ["embed", "--model", root / "model_b", "--modality", "image", "--inputs", sources[0], "--out", other, "-q"],
            capsys,
        )[0]
        == 0
    )
    code, _, stderr = _run(["index", "add", "--index", idx, "--embeddings", other], capsys)
    assert code == 1 and "fingerprint" in stderr
    assert len(Index.load(idx)) == N_SCENES  # nothing was written

    code, _, stderr = _run(
        [
            "index",
            "build",
            "--model",
            root / "model_a",
            "--modality",
            "image",
            "--inputs",
            sources[0],
            "--out",
            idx,
            "-q",
        ],
        capsys,
    )
    assert code == 1 and "exists" in stderr


def test_eval_writes_clip_benchmark_results_and_plots(world, capsys, tmp_path):
    from PIL import Image

    out = tmp_path / "results"
    code, stdout, stderr = _run(
        [
            "eval",
            "--model",
            world["root"] / "model_a",
            "--manifest",
            world["manifest"],
            "--pairs",
            "text:image",
            "audio-depth",
            "--zeroshot-modality",
            "image",
            "audio",
            "--label-field",
            "factors.shape",
            "--out",
            out,
            "--dataset",
            "tiny-world",
            "-q",
        ],
        capsys,
    )
    assert code == 0, stderr
    res = json.loads((out / "retrieval.json").read_text())
    assert [res[k] for k in ("dataset", "model", "task", "language")] == [
        "tiny-world",
        "bind-tiny",
        "any_pair_retrieval",
        "en",
    ]
    assert res["pretrained"] == str(world["root"] / "model_a")
    assert set(res["pairs"]) == {"text:image", "audio:depth", "depth:audio"}
    assert res["metrics"]["image_retrieval_recall@1"] == res["metrics"]["text_to_image_recall@1"]
    assert [s["id"] for s in res["skipped"]["image"]] == ["broken"]

    model, records = world["model"], world["records"][:N_SCENES]  # text -> image by hand, image captions as queries
    texts = [t for r in records for t in r.texts("image")]
    groups = torch.tensor([i for i, r in enumerate(records) for _ in r.texts("image")])
    scores = model.embed_sources("text", texts) @ model.embed_sources("image", [r.source("image") for r in records]).T
    expected = retrieval_metrics(scores, groups[:, None] == torch.arange(N_SCENES)[None])
    for key in ("recall@1", "recall@5", "median_rank", "mAP"):
        assert res["pairs"]["text:image"][key] == pytest.approx(expected[key], abs=1e-6), key

    zs = json.loads((out / "zeroshot_image.json").read_text())
    assert zs["task"] == "zeroshot_classification" and zs["modality"] == "image"
    assert set(zs["metrics"]) >= {"acc1", "acc5", "mean_per_class_recall"}
    assert zs["classnames"] == sorted({r.factors["shape"] for r in world["records"]})
    assert zs["metrics"]["num_samples"] == N_SCENES
    assert all(0.0 <= zs["metrics"][k] <= 1.0 for k in ("acc1", "acc5", "mean_per_class_recall"))
    assert (out / "zeroshot_audio.json").is_file()
    for png in ("recall_at_1.png", "similarity_text_image.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert "R@1" in stdout and "acc1" in stdout


@pytest.mark.slow
@pytest.mark.distributed
def test_embed_ddp_two_processes(world, tmp_path):
    """Two gloo ranks through Lightning's subprocess launcher: each writes a shard, rank 0 merges them."""
    out, plain = tmp_path / "ddp.safetensors", tmp_path / "plain.safetensors"
    args = [
        "embed",
        "--model",
        world["root"] / "model_a",
        "--modality",
        "image",
        "--manifest",
        world["manifest"],
        "-q",
        "--batch-size",
        "2",
    ]
    assert main([str(a) for a in [*args, "--out", plain]]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bind",
            *map(str, args),
            "--out",
            str(out),
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--accelerator",
            "cpu",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = EmbeddingSet.load(plain), EmbeddingSet.load(out)
    assert a.ids == b.ids and [s["id"] for s in b.skipped] == ["broken"]
    torch.testing.assert_close(a.embeddings, b.embeddings, atol=1e-5, rtol=0)
