"""End-to-end training through ``bindspace train fit`` (subprocesses, CPU): learning, the bad-sample log, export, exact
resume after SIGKILL, and checkpoints surviving a kill in the middle of a write."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from bind_world.shapes import write_shapes_dataset

from bind.data.manifest import write_manifest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
    "PYTHONPATH": str(REPO),
}
IMAGE = {"preprocess": {"size": 32, "crop_size": 32}, "stem": {"patch_size": 8}}


def _bind(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bind", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def _run(*args: str) -> None:
    """``bind ARGS`` in this process (the run that is killed is a subprocess: :func:`_bind`)."""
    from bind.cli import main

    assert main(list(args)) == 0


def _finish(proc: subprocess.Popen) -> None:
    """Wait for a run started by :func:`_bind` (every run compared for exactness is a subprocess with the same
    environment: an in-process run would use the test process's thread count)."""
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]


def _metrics(csv_path: Path) -> list[dict[str, float]]:
    rows = list(csv.DictReader(csv_path.open()))
    return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in rows]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Coloured shapes (12 captions) with a corrupt, a truncated and an empty PNG and a missing file in train."""
    root = tmp_path_factory.mktemp("shapes")
    manifest = write_shapes_dataset(root, train=96, val=48, size=32)
    media = root / "media"
    (media / "corrupt.png").write_bytes(os.urandom(500))
    good = (media / "s00000.png").read_bytes()
    (media / "truncated.png").write_bytes(good[: len(good) // 2])
    (media / "empty.png").write_bytes(b"")
    bad = {
        "bad-corrupt": "media/corrupt.png",
        "bad-truncated": "media/truncated.png",
        "bad-empty": "media/empty.png",
        "bad-missing": "media/does-not-exist.png",
    }
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows += [{"id": k, "split": "train", "text": "a red circle", "image": p} for k, p in bad.items()]
    return write_manifest(root / "with-bad.jsonl", rows), bad


def test_cli_fit_learns_skips_bad_samples_and_exports(dataset, tmp_path):
    manifest, bad = dataset
    shipped = REPO / "configs/train/shapes-image-minilm.yaml"
    text = shipped.read_text()
    assert text.startswith("# bindspace train fit --config configs/train/shapes-image-minilm.yaml")
    cfg = yaml.safe_load(text.replace("runs/shapes-image-minilm", str(tmp_path / "run")))
    cfg["data"]["manifest"] = str(manifest)
    cfg["trainer"].update(max_epochs=6, enable_progress_bar=False)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    _run("train", "fit", "--config", str(tmp_path / "cfg.yaml"))

    run = tmp_path / "run"
    rows = _metrics(run / "logs/version_0/metrics.csv")
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    r1 = [r["val/R@1/image->text"] for r in rows if "val/R@1/image->text" in r]
    r1_back = [r["val/R@1/text->image"] for r in rows if "val/R@1/text->image" in r]
    gallery = [r["val/gallery/image"] for r in rows if "val/gallery/image" in r]
    chance = 1 / gallery[-1]
    assert gallery[-1] == 12 and len(r1) == 6
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert r1[-1] >= 3 * chance and r1_back[-1] >= 3 * chance, (r1, r1_back)

    log = run / "logs/version_0/bad_samples.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["id"] for e in entries} == set(bad)
    for e in entries:
        assert e["path"].endswith(bad[e["id"]]) and e["modality"] == "image" and e["reason"]
    assert (run / "checkpoints/last.ckpt").is_file()

    import bind

    model = bind.load_model(run / "export/model")
    emb = model.embed_sources("image", [manifest.parent / "media/s00100.png"])
    assert emb.shape == (1, 384)


def _resume_config(tmp_path: Path, manifest: Path, run: str, epochs: int) -> Path:
    run_dir = tmp_path / run
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": epochs,
            "default_root_dir": str(run_dir),
            "enable_progress_bar": False,
            "log_every_n_steps": 1,
            "num_sanity_val_steps": 0,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(run_dir), "name": "logs"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(run_dir / "ckpt"),
                        "filename": "{step}",
                        "save_last": True,
                        "save_top_k": 1,
                        "every_n_train_steps": 1,
                    },
                }
            ],
        },
        "model": {
            "model": "bind-tiny",
            "modalities": ["image"],
            "lr": 2e-3,
            "warmup_steps": 2,
            "encoders": {
                "image": {**IMAGE, "patch_dropout": 0.25, "drop_path": 0.1},
                "text": {"preprocess": {"context_length": 16}},
            },
        },
        "data": {"manifest": str(manifest), "batch_size": 16, "val_split": None},  # train lines only
    }
    path = tmp_path / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sigkill_then_resume_from_last_matches_uninterrupted_run(dataset, tmp_path):
    """Every tensor bitwise equal (CPU, every run in a subprocess with the same thread count)."""
    manifest = write_manifest(
        dataset[0].parent / "small.jsonl",
        [
            json.loads(line)
            for line in (dataset[0].parent / "manifest.jsonl").read_text().splitlines()
            if '"split": "train"' in line
        ][:64],
    )
    epochs, steps_per_epoch = 4, 4
    _finish(_bind("train", "fit", "--config", str(_resume_config(tmp_path, manifest, "a", epochs))))

    cfg_b = _resume_config(tmp_path, manifest, "b", epochs)
    proc = _bind("train", "fit", "--config", str(cfg_b))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        done = [int(p.stem.split("=")[1]) for p in (tmp_path / "b/ckpt").glob("step=*.ckpt")]
        if done and max(done) >= 6:  # mid-run, in the middle of epoch 1
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed = torch.load(tmp_path / "b/ckpt/last.ckpt", map_location="cpu", weights_only=False)
    assert 0 < killed["global_step"] < epochs * steps_per_epoch

    _finish(_bind("train", "fit", "--config", str(cfg_b), "--ckpt_path", "last"))
    resumed_steps = [r["step"] for r in _metrics(tmp_path / "b/logs/version_1/metrics.csv") if "train/loss" in r]
    assert min(resumed_steps) == killed["global_step"]  # it continued from the checkpoint, not from scratch
    a = torch.load(tmp_path / "a/ckpt/last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "b/ckpt/last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == epochs * steps_per_epoch
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ after resuming, e.g. {differ[:3]}"
    w = "model.encoders.image.head.proj.weight"
    assert not torch.equal(killed["state_dict"][w], b["state_dict"][w])  # the resumed run did train on


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    target = tmp_path / "ckpt" / "last.ckpt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from bind.train.checkpoint import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        io.save_checkpoint({{"global_step": 1, "w": torch.arange(10_000)}}, {str(target)!r})
        def dying_save(obj, f, *args, **kwargs):  # half a checkpoint reaches the disk, then the process dies
            f.write(b"PK" + os.urandom(20_000))
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        io.save_checkpoint({{"global_step": 2, "w": torch.arange(10_000)}}, {str(target)!r})
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    partial = [p for p in target.parent.iterdir() if p.name != "last.ckpt"]
    assert partial and partial[0].stat().st_size >= 20_000  # the kill really hit a write in progress
    ckpt = torch.load(target, weights_only=False)
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["w"], torch.arange(10_000))

    from bind.train.checkpoint import remove_stale_temporaries

    assert remove_stale_temporaries(target.parent) == partial
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny CLIP (text + vision) saved with the MiniLM WordPiece tokenizer: a stand-in for a hub CLIP."""
    from transformers import CLIPConfig, CLIPModel

    from modalities.text import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer("minilm")
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.sep_token_id,
            bos_token_id=tok.cls_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=24,
    )
    d = tmp_path_factory.mktemp("clip")
    CLIPModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_image_anchored_depth_from_clip_with_lora(dataset, clip_dir, tmp_path):
    """ImageBind style: depth trained against a frozen CLIP image tower (CLIP text rides along), its encoder
    initialised from the CLIP ViT (1-channel stem) and adapted with LoRA; the export reloads offline."""
    import numpy as np
    from PIL import Image

    import bind
    from bind.lora import lora_specs
    from bind.train import fit

    pytest.importorskip("modalities.depth")
    root = dataset[0].parent
    rows = []
    for line in (root / "manifest.jsonl").read_text().splitlines()[:48] + (
        root / "manifest.jsonl"
    ).read_text().splitlines()[96:112]:
        row = json.loads(line)
        rgb = np.asarray(Image.open(root / row["image"]).convert("RGB")).astype(int)
        near = np.abs(rgb - rgb.mean((0, 1))).sum(-1) > 60  # the shape is nearer than the background
        Image.fromarray(np.where(near, 1000, 3000).astype(np.uint16)).save(root / f"media/{row['id']}.depth.png")
        rows.append({**row, "depth": f"media/{row['id']}.depth.png"})
    manifest = write_manifest(root / "depth.jsonl", rows)
    result = fit(
        manifest,
        modalities=["depth"],
        anchor="image",
        towers={"image": str(clip_dir), "text": str(clip_dir)},
        init_from={"depth": str(clip_dir)},
        init_channels="sum",
        lora={"depth": {"r": 4}},
        encoders={"depth": {"preprocess": {"size": 32, "crop_size": 32}, "stem": {"patch_size": 8}}},
        run_dir=tmp_path / "run",
        max_epochs=3,
        batch_size=16,
        lr=3e-3,
        progress_bar=False,
        log_every_n_steps=1,
    )
    model = result.model
    assert model.embed_dim == 24 and model.config.frozen == ["image", "text"]
    assert lora_specs(model)["depth"].r == 4
    rows = _metrics(tmp_path / "run/logs/metrics.csv")
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert losses[-1] < losses[0]
    assert "val/R@1/depth->image" in result.metrics and result.metrics["val/gallery/depth"] == 16
    report = json.loads((tmp_path / "run/logs/trainable_parameters.json").read_text())
    assert report["image"]["trainable"] == 0 and 0 < report["depth"]["trunk_percent"] < 100

    exported = bind.load_model(result.export_dir / "model")  # plain model: LoRA merged, towers rebuilt offline
    assert (result.export_dir / "adapters/adapter_model.safetensors").is_file()
    x = model.prepare("depth", [root / "media/s00000.depth.png"])
    img = model.prepare("image", [root / "media/s00000.png"])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(exported.encode("depth", x), model.encode("depth", x), atol=1e-5)
        assert torch.allclose(exported.encode("image", img), model.encode("image", img), atol=1e-6)


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs/train").glob("*.yaml")))
def test_shipped_configs_name_their_command_and_parse(config, capsys):
    text = (REPO / "configs/train" / config).read_text()
    assert text.splitlines()[0].startswith(f"# bindspace train fit --config configs/train/{config}")
    from bind.train.cli import train_main

    with pytest.raises(SystemExit) as done:  # --print_config parses and validates every key, then exits
        train_main(["fit", "--config", str(REPO / "configs/train" / config), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["modalities"] and printed["data"]["manifest"]


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory):
    """32 train + 8 val shapes with an image, a depth map (own captions) and a tone whose pitch follows the class."""
    from media import tone, write_audio

    root = tmp_path_factory.mktemp("multimodal")
    manifest = write_shapes_dataset(root, train=32, val=8, size=32, depth=True)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for i, row in enumerate(rows):
        write_audio(root / f"media/{row['id']}.wav", tone(1.0, freq=200.0 + 60 * (i % 12)))
        row["audio"] = f"media/{row['id']}.wav"
    return write_manifest(manifest, rows)


TINY = {  # per trained modality: the tiny-model overrides that keep a shipped config fast on a CPU
    "image": {"model": "bind-minilm-tiny", "encoders": {"image": {**IMAGE, "patch_dropout": 0.25}}},
    "audio": {
        "model": "bind-tiny",
        "encoders": {
            "audio": {
                "patch_dropout": 0.1,
                "drop_path": 0.1,
                "stem": {"patch_size": 16, "stride": 16},
                "preprocess": {
                    "preset": "imagebind",
                    "clips": 1,
                    "clip_seconds": 1.0,
                    "num_mel_bins": 32,
                    "target_length": 48,
                },
            }
        },
    },
    "depth": {"model": "bind-tiny", "encoders": {"depth": {**IMAGE, "patch_dropout": 0.5}}},
}


def _shipped_config(name: str, tmp_path: Path, run: str, manifest: Path, clip_dir: Path) -> Path:
    """A shipped config as a user would run it, with tiny models, a CPU and a checkpoint after every step."""
    cfg = yaml.safe_load((REPO / "configs/train" / name).read_text().replace("CLIP_DIR", str(clip_dir)))
    t, m = cfg["trainer"], cfg["model"]
    t.update(
        default_root_dir=str(tmp_path / run),
        max_epochs=2,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        precision="32-true",
    )
    if t.get("accelerator") == "gpu" and not torch.cuda.is_available():
        t.update(accelerator="cpu", devices=1)
        if t.get("strategy") == "bind_fsdp":  # FSDP needs CUDA
            t["strategy"] = "auto"
    t["callbacks"].append(
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": "every-step",
                "filename": "{step}",
                "save_last": True,
                "save_top_k": -1,
                "every_n_train_steps": 1,
            },
        }
    )
    tiny = TINY[m["modalities"][0]]
    m["model"] = tiny["model"]
    m["encoders"] = {**(m.get("encoders") or {}), **tiny["encoders"]}
    m["warmup_steps"] = 2
    cfg["data"].update(manifest=str(manifest), batch_size=8, num_workers=0)
    path = tmp_path / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs/train").glob("*.yaml")))
def test_sigkill_and_resume_every_shipped_config_is_bitwise_exact(config, multimodal, clip_dir, tmp_path):
    """kill -9 in the middle of a run of each shipped config (``cache_anchors: true`` where it ships so), then
    ``--ckpt_path last``: the final weights are bitwise those of an uninterrupted run."""
    proc = _bind("train", "fit", "--config", str(_shipped_config(config, tmp_path, "a", multimodal, clip_dir)))
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    a = torch.load(tmp_path / "a/every-step/last.ckpt", map_location="cpu", weights_only=True)
    total = a["global_step"]
    assert total >= 4

    cfg_b = _shipped_config(config, tmp_path, "b", multimodal, clip_dir)
    proc = _bind("train", "fit", "--config", str(cfg_b), start_new_session=True)  # DDP workers in its group
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = [int(p.stem.split("=")[1]) for p in (tmp_path / "b/every-step").glob("step=*.ckpt")]
        if done and max(done) >= total // 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed = torch.load(tmp_path / "b/every-step/last.ckpt", map_location="cpu", weights_only=True)
    assert 0 < killed["global_step"] < total

    proc = _bind("train", "fit", "--config", str(cfg_b), "--ckpt_path", "last")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    b = torch.load(tmp_path / "b/every-step/last.ckpt", map_location="cpu", weights_only=True)
    assert b["global_step"] == total
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ after resuming, e.g. {differ[:3]}"
    assert any(not torch.equal(killed["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
