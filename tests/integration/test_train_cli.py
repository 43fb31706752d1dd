"""``bindspace train fit`` as a user runs it (subprocesses, shipped config, default flags): one-line errors for bad
input, quiet output with progress lines, metrics for a short run, one run directory, small checkpoints that keep
the frozen MiniLM tower by identity, and corrupt media skipped and reported."""

from __future__ import annotations

import csv
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
import yaml
from bind_world.shapes import write_shapes_dataset

from bind.data.manifest import write_manifest

pytestmark = [pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
    "PYTHONPATH": str(REPO),
    "BIND_PRECISION": "fp32",
}
SHIPPED = REPO / "configs/train/shapes-image-minilm.yaml"


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bind", "train", "fit", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), train=40, val=8, size=32)


class _Evil:
    def __reduce__(self):
        return os.system, ("touch PWNED",)


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty",
        "invalid-json",
        "misspelt-modality",
        "evil-ckpt",
        "missing-ckpt",
        "no-val-split",
        "wrong-type",
        "bad-queue",
        "bad-resize",
    ],
)
def test_bad_input_is_one_line_naming_it(case, shapes, tmp_path):
    args = ["--config", str(SHIPPED), "--data.manifest", str(shapes), "--trainer.default_root_dir", "run"]
    expect: tuple[str, ...]
    if case == "missing":
        args[3], expect = "nope.jsonl", ("data.manifest", "nope.jsonl", "not found")
    elif case == "empty":
        (tmp_path / "empty.jsonl").write_text("")
        args[3], expect = "empty.jsonl", ("data.manifest", "empty.jsonl", "is empty")
    elif case == "invalid-json":
        (tmp_path / "bad.jsonl").write_text('{"id": "a", "split": "train"}\n{"id": "b", \n')
        args[3], expect = "bad.jsonl", ("bad.jsonl:2", "not valid JSON")
    elif case == "misspelt-modality":
        args += ["--model.modalities", "[imgae]"]
        expect = ("model.modalities", "'imgae'", "did you mean 'image'")
    elif case == "evil-ckpt":
        with open(tmp_path / "evil.ckpt", "wb") as f:
            pickle.dump({"state_dict": {}, "x": _Evil()}, f)
        args += ["--ckpt_path", "evil.ckpt"]
        expect = ("--ckpt_path evil.ckpt", "refused")
    elif case == "wrong-type":  # jsonargparse's multi-line type error and the usage, before: now one line
        args += ["--model.anchor_queue", "2.5"]
        expect = ("--model.anchor_queue '2.5'", "not a valid value", "int", "--help")
    elif case == "bad-queue":
        args += ["--model.loss", "siglip", "--model.anchor_queue", "64"]
        expect = ("anchor_queue needs the infonce loss",)
    elif case == "bad-resize":
        args += ["--model.progressive_resize", '{"image": {"scale": 2, "until": 0.5}}']
        expect = ("progressive_resize image", "scale must lie in (0, 1]")
    elif case == "missing-ckpt":
        args += ["--ckpt_path", "gone.ckpt"]
        expect = ("--ckpt_path gone.ckpt",)
    else:
        rows = [json.loads(line) for line in shapes.read_text().splitlines()]
        write_manifest(
            tmp_path / "test-split.jsonl", [{**r, "split": "test" if r["split"] == "val" else "train"} for r in rows]
        )
        args[3], expect = (
            str(tmp_path / "test-split.jsonl"),
            ("no 'val' split", "splits found: test, train", "--data.val_split"),
        )
    done = train(*args, cwd=tmp_path)
    err = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    assert len(err) == 1 and err[0].startswith("bindspace train: error: "), done.stderr[-2000:]
    for word in expect:
        assert word in err[0], err[0]
    assert not (tmp_path / "PWNED").exists()
    if case == "misspelt-modality":  # --debug gives the traceback
        assert "Traceback" in train(*args, "--debug", cwd=tmp_path).stderr


@pytest.mark.slow
def test_default_run_is_quiet_logs_metrics_and_keeps_everything_in_one_run_directory(shapes, tmp_path):
    """The shipped config (``log_every_n_steps: 20``) on 40 samples: one step per epoch."""
    done = train(
        "--config",
        str(SHIPPED),
        "--data.manifest",
        str(shapes),
        "--trainer.max_epochs",
        "2",
        "--trainer.default_root_dir",
        "elsewhere/run",
        cwd=tmp_path,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    progress = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [p.split()[1] for p in progress] == ["1/2", "2/2"] and all("train/loss" in p for p in progress), out
    for noise in ("Tip", "litlogger", "FLOPs", "Warning", "GPU available", "Loading weights", "bad_samples.jsonl"):
        assert noise not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)) and len(lines) <= 6, out

    run = tmp_path / "elsewhere/run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]  # nothing written outside the run directory
    assert {p.name for p in run.iterdir()} == {"logs", "tb", "checkpoints", "export"}
    metrics = list(csv.DictReader((run / "logs/version_0/metrics.csv").open()))
    assert sum(1 for r in metrics if r.get("train/loss")) == 2  # one per epoch, although 1 step < 20
    assert sum(1 for r in metrics if r.get("val/R@1/image->text")) == 2

    ckpt_path = run / "checkpoints/last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert not [k for k in ckpt["state_dict"] if k.startswith("model.encoders.text.")]
    assert set(ckpt["bind_frozen_towers"]) == {"text"} and ckpt["bind_frozen_towers"]["text"]["name"] == "minilm"
    assert ckpt_path.stat().st_size < 5e6  # the MiniLM tower alone is 90 MB

    import bind
    from bind.train import export_checkpoint

    exported = bind.load_model(export_checkpoint(ckpt_path, tmp_path / "again") / "model")
    shipped = bind.load_model(run / "export/model")
    x = shipped.prepare("text", ["a red circle"])
    with torch.no_grad():
        assert torch.equal(exported.encode("text", x), shipped.encode("text", x))

    ckpt["bind_frozen_towers"]["text"]["fingerprint"] = "0" * 64
    torch.save(ckpt, tmp_path / "other-tower.ckpt")
    done = train(
        "--config",
        str(SHIPPED),
        "--data.manifest",
        str(shapes),
        "--trainer.max_epochs",
        "3",
        "--trainer.default_root_dir",
        "elsewhere/run",
        "--ckpt_path",
        "other-tower.ckpt",
        cwd=tmp_path,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "frozen text tower 'minilm'" in done.stderr and "differs" in done.stderr, done.stderr[-2000:]


def _bomb_png(path: Path, side: int = 100_000) -> Path:
    """A valid PNG header claiming ``side`` x ``side`` pixels (and a few bytes of data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.slow
def test_corrupt_media_is_skipped_and_listed(shapes, tmp_path):
    """A bomb PNG, a truncated mp4, a zero-byte wav and a text file named .png among good image, video and audio
    files: the run finishes, and exactly those four are listed as skipped (log file and end-of-run count)."""
    from media import indexed_frames, tone, truncate, write_audio, write_video

    root = shapes.parent
    media = tmp_path / "media"
    media.mkdir()
    rows = [json.loads(line) for line in shapes.read_text().splitlines()]
    for i, row in enumerate(rows[:24] + rows[40:]):
        row["image"] = str(root / row["image"])
        row["video"] = str(write_video(media / f"{row['id']}.mp4", indexed_frames(8, 32, 32)))
        row["audio"] = str(write_audio(media / f"{row['id']}.wav", tone(1.0, freq=200.0 + 50 * (i % 12))))
    rows = rows[:24] + rows[40:]
    truncate(media / "s00000.mp4", media / "truncated.mp4", keep=0.3)
    (media / "empty.wav").write_bytes(b"")
    (media / "text.png").write_text("this is not an image\n")
    bad = {
        "bad-bomb": ("image", str(_bomb_png(media / "bomb.png"))),
        "bad-text": ("image", str(media / "text.png")),
        "bad-mp4": ("video", str(media / "truncated.mp4")),
        "bad-wav": ("audio", str(media / "empty.wav")),
    }
    rows += [{"id": k, "split": "train", "text": "a red circle", m: p} for k, (m, p) in bad.items()]
    manifest = write_manifest(tmp_path / "mixed.jsonl", rows)
    cfg = yaml.safe_load(SHIPPED.read_text())
    cfg["model"].update(
        modalities=["image", "video", "audio"],
        encoders={
            "image": cfg["model"]["encoders"]["image"],
            "video": {"preprocess": {"frames_per_clip": 2, "size": 32, "crop_size": 32}, "stem": {"patch_size": 8}},
            "audio": {"preprocess": {"clips": 1, "clip_seconds": 1.0, "num_mel_bins": 32, "target_length": 48}},
        },
    )
    cfg["trainer"].update(max_epochs=1, default_root_dir="run")
    cfg["trainer"]["callbacks"][0]["init_args"]["monitor"] = "val/R@1/image->text"
    cfg["data"].update(manifest=str(manifest), batch_size=4)  # 28 train samples: every one is read (drop_last)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    done = train("--config", "cfg.yaml", cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    log = tmp_path / "run/logs/version_0/bad_samples.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((e["id"], e["modality"]) for e in entries) == sorted((k, m) for k, (m, _) in bad.items())
    assert all(e["reason"] for e in entries)
    assert "4 bad samples skipped (see run/logs/version_0/bad_samples.jsonl)" in out, out
    assert "Traceback" not in out


def test_init_from_an_encoder_of_a_saved_model(shapes, tmp_path):
    """``--model.init_from '{image: DIR#image}'``: a run starts where another's exported encoder ended; a source
    without that encoder is a one-line error and the run writes nothing."""
    base = ["--config", str(SHIPPED), "--data.manifest", str(shapes), "--trainer.max_epochs", "2"]
    assert train(*base, "--trainer.default_root_dir", "first", cwd=tmp_path).returncode == 0
    done = train(
        *base,
        "--trainer.default_root_dir",
        "second",
        "--model.init_from",
        "{image: first/export/model#image}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = {}
    for run in ("first", "second"):
        with open(tmp_path / run / "logs/version_0/metrics.csv") as f:
            metrics[run] = [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")][-1]
    assert metrics["second"] < metrics["first"]  # two more epochs, from the first run's encoder
    bad = train(
        *base,
        "--trainer.default_root_dir",
        "third",
        "--model.init_from",
        "{image: first/export/model#sonar}",
        cwd=tmp_path,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "no 'sonar' encoder" in bad.stderr
    assert not (tmp_path / "third").exists()
