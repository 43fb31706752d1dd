"""The video QA examples (``examples/video_qa/``) end to end on a tiny world and a tiny model, and their errors on bad
inputs. Answer quality is measured by the full runs on the demo model (README), not asserted at this size."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from bind_world.qa import QUESTION_TYPES
from bind_world.scene import FACTORS

import bind
from bind.errors import MediaError
from bind.qa import PrefixLMForQA, load_causal_lm

pytestmark = [pytest.mark.integration]
EXAMPLES = Path(__file__).parents[2] / "examples" / "video_qa"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"video_qa_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from bind_world import generate

    root = tmp_path_factory.mktemp("video_qa")
    manifest = generate(root / "world", n=10, seed=1, workers=1, splits=(0.6, 0.0, 0.4))
    torch.manual_seed(0)
    bind.create_model("bind-tiny", modalities=["video", "audio", "text"]).save_pretrained(root / "model")
    return root, manifest


def _test_videos(manifest: Path) -> list[dict]:
    return [r for r in map(json.loads, manifest.read_text().splitlines()) if r["split"] == "test"]


def _check_table(results: dict, types, n: int) -> None:
    assert list(results) == list(types)
    for t, r in results.items():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] == n
        assert r["chance"] == pytest.approx(1 / len(FACTORS[QUESTION_TYPES[t].factor]))
        assert r["ratio"] == pytest.approx(r["accuracy"] / r["chance"])


def test_multiple_choice_example(world, tmp_path, capsys):
    root, manifest = world
    mc = _example("multiple_choice")
    base = ["--model", str(root / "model"), "--manifest", str(manifest)]
    results = mc.main([*base, "--fuse-audio", "0.5", "--json", str(tmp_path / "mc.json")])
    n = len(_test_videos(manifest))
    _check_table(results, QUESTION_TYPES, n)
    assert results["shape"]["medium"] == "video(0.5)+audio(0.5)" and results["colour"]["medium"] == "video"
    assert results["sound"]["medium"] == "audio"
    printed = capsys.readouterr().out
    assert "chance" in printed and "sound" in printed
    assert json.loads((tmp_path / "mc.json").read_text())["results"] == json.loads(json.dumps(results))

    # one question about one video: the answer is the best-scoring choice
    video = root / "world" / _test_videos(manifest)[0]["video"]
    asked = mc.main(
        [*base, "--video", str(video), "--question", "what colour is the object?", "--choices", "crimson|azure|golden"]
    )
    assert asked["answer"] == max(asked["scores"], key=asked["scores"].get)

    # bad inputs fail with errors that say what is wrong
    with pytest.raises(ValueError, match="question 0 is empty"):
        mc.main([*base, "--video", str(video), "--question", "  ", "--choices", "a|b"])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 20)
    with pytest.raises(MediaError, match="broken.mp4"):
        mc.main([*base, "--video", str(broken), "--question", "what is it?", "--choices", "a|b"])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    target = next(r for r in rows if r["split"] == "test")
    target["video"] = str(broken)
    bad_manifest = manifest.parent / "manifest-broken.jsonl"
    bad_manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(MediaError, match="broken.mp4") as err:
        mc.main(["--model", str(root / "model"), "--manifest", str(bad_manifest)])
    assert err.value.modality in ("video", "audio")


def test_generative_example(world, tmp_path, capsys):
    root, manifest = world
    gen = _example("generative")
    base = ["--model", str(root / "model"), "--manifest", str(manifest), "--batch-size", "8"]
    video = root / "world" / _test_videos(manifest)[0]["video"]

    # bad inputs fail before any training
    t = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no-such-lm"):
        gen.main([*base, "--out", str(tmp_path / "x"), "--lm", str(tmp_path / "no-such-lm")])
    with pytest.raises(ValueError, match="question 0 is empty"):
        gen.main([*base, "--out", str(tmp_path / "x"), "--video", str(video), "--question", ""])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 512)
    with pytest.raises(MediaError, match="broken.mp4"):
        gen.main([*base, "--out", str(tmp_path / "x"), "--video", str(broken), "--question", "what is it?"])
    assert time.perf_counter() - t < 60 and not (tmp_path / "x" / "lm").exists()

    out = tmp_path / "gen"
    results = gen.main(
        [
            *base,
            "--out",
            str(out),
            "--epochs",
            "2",
            "--lm-epochs",
            "2",
            "--lora-rank",
            "2",
            "--lora-epochs",
            "1",
            "--video",
            str(video),
            "--question",
            "what colour is the object?",
        ]
    )
    n = len(_test_videos(manifest))
    _check_table(results["results"], QUESTION_TYPES, n)
    assert set(results["stages"]) == {"stage1", "stage2"}
    assert results["tokens"] == {"video": 3, "audio": 8}  # 2 tubelet steps + CLS; audio pooled to 8
    assert isinstance(results["asked"]["answer"], str)
    assert "chance" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["n_test_questions"] == n * len(QUESTION_TYPES)
    assert (out / "lm" / "config.json").is_file() and (out / "qa" / "projector.safetensors").is_file()
    assert (out / "qa" / "lm_adapter" / "adapter_config.json").is_file()

    # the saved projector + adapter answer again around the stage-0 LM
    lm, tok = load_causal_lm(out / "lm")
    qa = PrefixLMForQA.load(out / "qa", lm, tok)
    tokens = {"video": torch.randn(2, 3, 32), "audio": torch.randn(2, 8, 32)}
    answers = qa.generate(tokens, ["what colour is the object?", "what is making the sound?"])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    # any LM by path (here the stage-0 one), video tokens only, pooled to K
    again = gen.main(
        [
            *base,
            "--out",
            str(tmp_path / "gen2"),
            "--lm",
            str(out / "lm"),
            "--no-audio",
            "--tokens",
            "1",
            "--no-cls",
            "--epochs",
            "1",
        ]
    )
    _check_table(again["results"], ("colour", "motion", "activity", "shape"), n)
    assert again["tokens"] == {"video": 1} and not (tmp_path / "gen2" / "lm").exists()
