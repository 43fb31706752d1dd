"""``bindspace bench compare`` on tiny settings: same-weights parity with timm, video variants, README table."""

from __future__ import annotations

import json

import pytest
import torch

from bind.bench.compare import README_END, README_START
from bind.cli import main


def test_compare_parity_video_variants_and_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_START}\nold\n{README_END}\n\nafter\n")
    out = tmp_path / "compare.json"
    assert (
        main(
            [
                "bench",
                "compare",
                "--timm-model",
                "vit_tiny_patch16_224",
                "--batch",
                "1",
                "--iters",
                "1",
                "--frames",
                "2",
                "5",
                "--size",
                "32",
                "--variants",
                "joint",
                "divided+r2",
                "--json",
                str(out),
                "--readme",
                str(readme),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    img = result["image"]
    assert img["init_report"]["skipped"] == []  # every timm tensor found its place in bind
    assert img["fp32_max_abs_diff"] <= 1e-5 < img["fp32_feature_max_abs"]
    assert img["fp32"]["bind_samples_per_s"] > 0 and img["auto_precision"] in ("fp32", "bf16")
    rows = {(r["variant"], r["frames"]): r for r in result["video"]["rows"]}
    assert set(rows) == {("joint", 2), ("joint", 5), ("divided+r2", 2), ("divided+r2", 5)}
    # 5 frames, tubelet 1, 32 px / 16 = 4 patches: joint 1 CLS + 5*4; divided has a CLS per step, r2 -> 3 steps
    assert rows["joint", 5]["tokens"] == 21 and rows["divided+r2", 5]["tokens"] == 3 * 5
    text = readme.read_text()
    assert "old" not in text and "after" in text and "| joint |" in text and "bind / timm" in text


def test_bad_sizes_are_refused_before_any_work(capsys):
    assert main(["bench", "compare", "--no-vision", "--frames", "0", "8"]) != 0
    assert "frame counts must be >= 1 (got [0, 8])" in capsys.readouterr().err


def test_readme_without_markers_is_refused(tmp_path):
    from bind.bench.compare import update_readme

    readme = tmp_path / "README.md"
    readme.write_text("# nothing to replace\n")
    with pytest.raises(ValueError, match="bench:compare"):
        update_readme(readme, "table")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_video_on_cuda_xformers_and_sdpa_agree():
    from bind.bench.compare import compare_video, video_encoder
    from bind.nn.attention import _xformers_ops

    if _xformers_ops() is None:
        pytest.skip("needs xformers")
    device = torch.device("cuda")
    x = torch.randn(1, 3, 16, 64, 64, device=device)
    out = {}
    for backend in ("sdpa", "xformers"):
        model = video_encoder("divided+r2", 64, 2, backend, device)
        with torch.inference_mode():
            out[backend] = model.encode("video", x, precision="bf16")
    assert out["sdpa"].dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(out["sdpa"], out["xformers"]).min() > 0.999
    rows = compare_video([8, 16], ["joint", "divided"], 64, 2, 1, device, "xformers", "bf16")["rows"]
    assert len(rows) == 4 and all(r["peak_memory_mib"] > 0 for r in rows)


def test_bench_model_is_in_eval_mode_so_precision_applies(tmp_path):
    import timm

    from bind.bench.compare import bind_image_from_timm

    model, encoder, _ = bind_image_from_timm(timm.create_model("vit_tiny_patch16_224", num_classes=0), tmp_path)
    assert not model.training and not encoder.training
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert not torch.equal(model.encode("image", x, precision="bf16"), model.encode("image", x, precision="fp32"))
