"""``bindspace demo --quick``: the whole path (world -> decode once -> train six encoders -> evaluate every pair) runs
and writes what it promises, and says only what it has to: one line per stage and per epoch, then the result tables.
Learning quality is measured by the full run, not asserted at this size."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bind_world.demo import PARAPHRASE_DRAWS
from bind_world.scene import MODALITIES

import bind

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_demo_writes_results_plots_model_and_index(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bind", "demo", "--quick", "--out", str(out), "--n", "24"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout
    assert "modality -> text" in printed and "paraphrase" in printed
    # quiet: no library chatter (Lightning INFO lines, tips, model summary, warnings, weight-loading bars)
    assert proc.stderr.strip() == "", proc.stderr[-3000:]
    for noise in ("INFO", "litlogger", "FLOPs", "Warning", "Loading weights", "GPU available"):
        assert noise not in printed
    before_tables = printed.split("held-out test scenes")[0].strip().splitlines()
    assert [line.split("]")[0] + "]" for line in before_tables[1:]] == [
        "[world]",
        "[decode]",
        "[train image+audio+thermal+imu]",
        "[train video]",
        "[train depth]",
        "[train]",
        "[eval]",
    ]  # one line per stage, one per epoch: video and depth start from the trained image encoder (LanguageBind's recipe)
    epoch = before_tables[3]
    assert epoch.startswith("[train image+audio+thermal+imu] epoch 1/1  step ") and " loss " in epoch
    assert "ETA" in epoch

    results = json.loads((out / "results.json").read_text())
    assert results["config"]["init_from"] == {"video": "image", "depth": "image"}
    assert results["training"]["modality_lr"] == {"depth": 1e-3}  # depth fine-tunes its start at half the rate
    encoders = results["model"]["encoders"]  # the started stems took the image stem's channels: the trained one loaded
    assert encoders["video"]["stem"]["conv"] == encoders["depth"]["stem"]["conv"] == encoders["image"]["stem"]["conv"]
    names = ("text", *MODALITIES)
    pairs = results["pairs"]
    not_applicable = set(results["summary"]["not_applicable"])
    for a, b in itertools.permutations(names, 2):
        e = pairs[f"{a}->{b}"]  # every ordered pair is reported
        if f"{a}->{b}" in not_applicable:  # no shared factor: no defined positives
            assert not e["shared_factors"] and e["r1"] is None
            continue
        assert e["shared_factors"] and 0.0 <= e["r1"] <= 1.0 and 0.0 < e["chance"] <= 1.0
        assert e["ratio"] == pytest.approx(e["r1"] / e["chance"])
        assert e["trained_together"] == ("text" in (a, b))
    assert "imu->image" in not_applicable and "audio->depth" not in not_applicable
    for m in MODALITIES:
        q = results["text_queries"][m]
        assert {"templated", "paraphrased"} <= set(q)
        for kind in ("templated", "paraphrased"):  # the anchor bound: an ideal encoder's R@1 for the same queries
            e = q[kind]
            assert 0.0 <= e["bound"] <= 1.0
            assert e["of_bound"] == (pytest.approx(e["r1"] / e["bound"]) if e["bound"] else None)
        assert q["paraphrased"]["num_queries"] == PARAPHRASE_DRAWS * q["templated"]["num_queries"]  # several draws
    assert "bound" in printed and "video QA" in printed
    assert set(results["video_qa"]) == {"colour", "motion", "activity", "shape"}
    for r in results["video_qa"].values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] > 0
    assert (out / "r1_matrix.png").stat().st_size > 0
    assert results["timings_s"]["total"] > 0

    model = bind.load_model(out / "model")
    assert set(MODALITIES) | {"text"} <= set(model.modalities)
    e = model.embed_sources("text", ["a red cube"])
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(1))
    assert (out / "index" / "metadata.json").is_file()

    # the video QA example runs on the demo's model and world
    import importlib.util

    from bind_world.qa import QUESTION_TYPES

    path = ROOT / "examples" / "video_qa" / "multiple_choice.py"
    spec = importlib.util.spec_from_file_location("video_qa_multiple_choice", path)
    video_qa = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(video_qa)
    qa = video_qa.main(
        ["--model", str(out / "model"), "--manifest", str(out / "world" / "manifest.jsonl"), "--limit", "4"]
    )
    assert set(qa) == set(QUESTION_TYPES)
    for r in qa.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["chance"] == pytest.approx(1 / len(r["choices"]))


def test_demo_can_train_every_encoder_from_scratch(tmp_path):
    """``--init-from none``: every encoder from scratch in one stage; a bad pair is a one-line error."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "bind", "demo", "--quick", "--n", "24", "--out", str(out), "--init-from", "none"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = [line.split("]")[0] + "]" for line in proc.stdout.split("held-out test scenes")[0].splitlines()[1:]]
    assert stages[2:4] == ["[train]", "[train]"]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["init_from"] == {} and results["config"]["modality_lr"] == {}
    model = bind.load_model(out / "model")
    assert set(MODALITIES) <= set(model.modalities) and model.untrained_modalities == []
    bad = subprocess.run([*cmd[:-1], "video=sonar"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "init_from" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_modalities_train_their_own_epochs_in_stages_joined_into_one_model(tmp_path):
    """``modality_epochs``: video trains 2 epochs in a stage of its own after image's 1; one model holds both."""
    from bind_world.experiment import ExperimentConfig, WorldExperiment

    config = ExperimentConfig(modalities=("image", "video")).shrunk(n=16, modality_epochs={"video": 2})
    lines: list[str] = []
    with WorldExperiment(tmp_path / "run", config, echo=lines.append) as run:
        run.prepare()
        result = run.train(tmp_path / "run" / "train")
    epochs = [line.split("  step")[0] for line in lines if " epoch " in line]
    assert epochs == ["[train image] epoch 1/1", "[train video] epoch 1/2", "[train video] epoch 2/2"]
    assert set(result.model.modalities) >= {"image", "video"} and result.model.untrained_modalities == []
    assert all(any(f"/{m}->" in k for k in result.metrics) for m in ("image", "video")), result.metrics
    with pytest.raises(ValueError, match="modality_epochs"):
        ExperimentConfig(modalities=("image",), modality_epochs={"sonar": 2})
    with pytest.raises(ValueError, match="first stage"):
        ExperimentConfig(modalities=("image", "video"), modality_epochs={"image": 2}, init_from={"video": "image"})


def test_a_modality_with_its_own_learning_rate_trains_in_a_stage_of_its_own(tmp_path, monkeypatch):
    """``modality_lr``: depth trains at its own rate in a stage after image's, which keeps ``lr``."""
    from bind_world.experiment import ExperimentConfig, WorldExperiment

    import bind.train

    real, rates = bind.train.fit, {}

    def fit(*args, **kwargs):
        rates[tuple(kwargs["modalities"])] = kwargs["lr"]
        return real(*args, **kwargs)

    monkeypatch.setattr(bind.train, "fit", fit)
    config = ExperimentConfig(modalities=("image", "depth"), modality_lr={"depth": 5e-4}).shrunk(n=16)
    lines: list[str] = []
    with WorldExperiment(tmp_path / "run", config, echo=lines.append) as run:
        run.prepare()
        result = run.train(tmp_path / "run" / "train")
    assert [line.split("  step")[0] for line in lines if " epoch " in line] == [
        "[train image] epoch 1/1",
        "[train depth] epoch 1/1",
    ]
    assert rates == {("image",): config.lr, ("depth",): 5e-4}
    assert config.init_from == {"depth": "image"} and result.model.untrained_modalities == []
    assert ExperimentConfig(modalities=("image", "depth"), init_from={}).modality_lr == {}  # from scratch: lr
    # a started encoder's stem takes its source's channels, and only its own: thermal keeps its stem
    shared = {"patch_size": 8, "conv": [24, 48]}
    encoders = {
        "image": {"stem": {"patch_size": 8, "conv": [16, 32]}},
        "depth": {"stem": shared},
        "thermal": {"stem": shared},
    }
    started = ExperimentConfig(modalities=("image", "depth", "thermal"), encoders=encoders).encoders
    assert started["depth"]["stem"]["conv"] == [16, 32] and started["thermal"]["stem"]["conv"] == [24, 48]
    with pytest.raises(ValueError, match="modality_lr"):
        ExperimentConfig(modalities=("image", "depth"), modality_lr={"depth": 0})


def test_texts_repeated_among_the_queries_are_embedded_once(tmp_path, monkeypatch):
    """The paraphrased queries repeat (16 draws over few wordings): each distinct text goes through the anchor once,
    and every query gets its text's embedding."""
    from bind_world.experiment import MODEL_NAME, ExperimentConfig, WorldExperiment

    config = ExperimentConfig(modalities=("image",)).shrunk(n=8)
    texts = ["a red cube.", "a blue torus, far away.", "a red cube.", "a red cube."]
    with WorldExperiment(tmp_path / "run", config, echo=lambda line: None) as run:
        run.prepare()
        model = bind.create_model(MODEL_NAME, modalities=["text", "image"]).eval()
        embedded: list[int] = []
        real = type(model).embed_tensors
        monkeypatch.setattr(
            type(model), "embed_tensors", lambda self, m, s, **k: embedded.append(len(s)) or real(self, m, s, **k)
        )
        emb = run.embed_texts(model, texts)
        alone = torch.cat([run.embed_texts(model, [t]) for t in texts[:2]])
        assert run.embed_texts(model, []).shape == (0, model.embed_dim)
    assert embedded[0] == 2 and emb.shape == (4, model.embed_dim)
    assert torch.equal(emb[0], emb[2]) and torch.equal(emb[0], emb[3])
    assert torch.allclose(emb[:2], alone, atol=1e-5)
