"""``bindspace info`` and ``bindspace bench encoders`` through the real console entry point."""

from __future__ import annotations

import json

import pytest

from bind.cli import main


def test_bind_info_json(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "sdpa" in data["attention_backends"] and "math" in data["attention_backends"]
    # every backend is either offered or named with the reason it is not
    assert set(data["attention_backends"]) | set(data["unavailable_backends"]) == {"sdpa", "math", "xformers"}
    assert all(why for why in data["unavailable_backends"].values())
    assert {"text", "image"} <= set(data["modalities"])
    assert "bind-tiny" in data["models"]
    assert data["versions"]["torch"]


def test_bench_encoders_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "encoders",
                "--model",
                "bind-tiny",
                "--modality",
                "image",
                "--batch",
                "2",
                "--iters",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())["result"]
    assert res["samples_per_s"] > 0 and res["gflops_per_sample"] > 0
    assert 0 < res["mfu"] < 1.5 and res["peak_matmul_gflops_per_s"] > 0


def test_cli_reports_errors_without_traceback(capsys):
    assert main(["bench", "encoders", "--model", "bind-nope", "--modality", "image", "--iters", "1"]) == 1
    assert "unknown model 'bind-nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "data", "--modalities", "sonar"], "no registered modality among ['sonar']"),
        (["bench", "memory", "--frames", "0", "8"], "frame counts must be >= 1"),
        (["bench", "memory", "--frames"], "frame counts must be >= 1"),
        (["bench", "attention", "--lengths"], "lengths must be one or more values >= 1"),
        (["bench", "attention", "--lengths", "0"], "lengths must be one or more values >= 1"),
        (["bench", "attention", "--heads", "0"], "heads, head_dim, iters >= 1"),
    ],
)
def test_bench_refuses_empty_or_bad_input_in_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bench_attention_writes_json(tmp_path, capsys):
    out = tmp_path / "attention.json"
    argv = ["bench", "attention", "--lengths", "16", "32", "--batch", "2", "--iters", "1", "--json", str(out)]
    assert main(argv) == 0
    rows = json.loads(out.read_text())["result"]
    assert [r["length"] for r in rows] == [16, 32]
    for r in rows:
        for phase in ("forward", "forward_backward"):
            assert min(r[phase][f"{k}_ms"] for k in ("flash", "math", "bind")) > 0
    assert "math/flash" in capsys.readouterr().err
