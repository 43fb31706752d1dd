"""``bindspace bench video-reduction --quick``: world -> decode once -> train the video encoder per variant -> R@1 and
speed. Checks structure and consistency (every variant reported, metrics in range, reduced variants really see fewer
tokens and FLOPs, deltas match the rows); retrieval quality itself is measured by the full run, not asserted here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from bind_world.video_reduction import DEFAULT_VARIANTS, paired_bootstrap, parse_variant

from bind.cli import main

pytestmark = [pytest.mark.integration]

VARIANTS = ["joint", "joint+reduce_time2", "divided", "divided+reduce_time2+reduce_space2"]


def test_parse_variant():
    assert [parse_variant(v).reduced for v in DEFAULT_VARIANTS] == [False, True, False, True]
    v = parse_variant("divided+reduce_time2+reduce_space2")
    assert (v.attention, v.reduce_time, v.reduce_space, v.base) == ("divided", 2, 2, "divided")
    for bad in ("sparse", "joint+reduce_time", "joint+pool2", "joint+reduce_time0"):
        with pytest.raises(ValueError):
            parse_variant(bad)
    same = np.array([1.0, 0.0, 1.0, 1.0])
    assert paired_bootstrap(same, same) == [0.0, 0.0]
    lo, hi = paired_bootstrap(np.ones(50), np.r_[np.ones(25), np.zeros(25)])
    assert 0 < lo <= 50 <= hi <= 100


def test_quick_video_reduction_bench(tmp_path, capsys):
    out = tmp_path / "json" / "video-reduction.json"
    assert (
        main(
            [
                "bench",
                "video-reduction",
                "--quick",
                "--n",
                "30",
                "--out",
                str(tmp_path / "run"),
                "--json",
                str(out),
                "--variants",
                *VARIANTS,
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    printed = captured.out
    assert "reduced - unreduced" in printed and all(v in printed for v in VARIANTS)
    for v in VARIANTS:  # the world runner's progress: one line per epoch of every variant
        assert sum(line.startswith(f"[train {v}] epoch 1/1  step ") for line in printed.splitlines()) == 1
    noise = ("GPU available", "litlogger", "Total FLOPs", "Trainable params")  # Lightning's banners and summary
    assert not any(n in captured.out + captured.err for n in noise)

    results = json.loads(out.read_text())
    assert results["suite"] == "video-reduction"
    assert results["test_scenes"] == results["world"]["counts"]["test"] > 0
    rows = results["variants"]
    assert list(rows) == VARIANTS
    frames = results["config"]["frames"]
    for name, r in rows.items():
        ret = r["retrieval"]
        assert set(ret["shared_factors"]) == {"shape", "colour", "motion", "activity"}
        for key in ("video->text", "text->video", "text->video_paraphrased"):
            m = ret[key]
            assert 0.0 <= m["r1"] <= 1.0 and 0.0 < m["chance"] <= 1.0
            assert m["ratio"] == pytest.approx(m["r1"] / m["chance"])
            assert m["num_queries"] == m["gallery_size"] == results["test_scenes"]
        assert set(ret["per_factor_video->text"]) == set(ret["shared_factors"])
        # a single factor has at least as many positives as all four together
        assert all(f["chance"] >= ret["video->text"]["chance"] for f in ret["per_factor_video->text"].values())
        assert r["seconds_per_video"] > 0 and r["gflops_per_video"] > 0 and r["train_seconds"] > 0
        t = r["tokens"]
        assert t["tokens"] == t["temporal_steps"] * t["patches_per_step"]
        assert t["temporal_steps"] == math.ceil(math.ceil(frames / 2) / r["reduce_time"])  # 2-frame tubelets, merged
        assert r["encoder_overrides"]["attention"] == r["attention"] == name.split("+")[0]

    base_tokens = rows["joint"]["tokens"]
    assert rows["divided"]["tokens"]["tokens"] == base_tokens["tokens"]
    assert rows["joint+reduce_time2"]["tokens"]["tokens"] * 2 == base_tokens["tokens"]
    assert rows["divided+reduce_time2+reduce_space2"]["tokens"]["tokens"] * 8 == base_tokens["tokens"]
    assert (
        rows["divided+reduce_time2+reduce_space2"]["tokens"]["patches_per_step"] * 4 == base_tokens["patches_per_step"]
    )

    deltas = results["deltas_vs_unreduced"]
    assert set(deltas) == {"joint+reduce_time2", "divided+reduce_time2+reduce_space2"}
    for name, d in deltas.items():
        base = rows[d["base"]]
        for key in ("video->text", "text->video", "text->video_paraphrased"):
            want = 100 * (rows[name]["retrieval"][key]["r1"] - base["retrieval"][key]["r1"])
            assert d[f"{key}_r1_points"] == pytest.approx(want, abs=0.01)
            lo, hi = d[f"{key}_r1_points_ci95"]
            assert lo - 0.01 <= d[f"{key}_r1_points"] <= hi + 0.01
        assert d["within_2_points"] == (abs(d["video->text_r1_points"]) <= 2 and abs(d["text->video_r1_points"]) <= 2)
        assert d["flops_ratio"] < 1 and d["token_ratio"] < 1
        assert d["speedup"] == pytest.approx(base["seconds_per_video"] / rows[name]["seconds_per_video"])
