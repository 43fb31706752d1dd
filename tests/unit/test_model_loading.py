"""One loader for model directories (issue #14): everything is validated before use and every problem is one
:class:`ModelLoadError` line naming the file — truncations, bit flips, wrong types, pickles, NaN — never a traceback,
never code execution. And (issue #13) embeddings of never-trained encoders come with a one-line warning; eval-mode
embeddings carry no autograd graph."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import struct
import subprocess
import sys

import pytest
import safetensors.torch
import torch

import bind
from bind.errors import BindError, ModelLoadError
from bind.model import WEIGHTS_NAME


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = bind.create_model("bind-tiny", modalities=["image", "imu"], precision="fp32")
    return model, model.save_pretrained(tmp_path_factory.mktemp("model") / "m")


def _copy(src, dst):
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _header(path) -> tuple[int, dict]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8 : 8 + n])


def _with_header(path, header: dict) -> None:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])


class Payload:
    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def corruptions(model, tmp_path):
    """(name, function that damages a model directory) for every kind of bad directory."""
    w = WEIGHTS_NAME
    cases = {}

    def truncate(n):
        return lambda d: (d / w).write_bytes((d / w).read_bytes()[:n])

    def set_config(fn):
        def apply(d):
            cfg = json.loads((d / "config.json").read_text())
            (d / "config.json").write_text(json.dumps(fn(cfg)))

        return apply

    def set_header(fn):
        def apply(d):
            _, h = _header(d / w)
            fn(h)
            _with_header(d / w, h)

        return apply

    def state_file(fn):
        return lambda d: safetensors.torch.save_file(fn(dict(model.state_dict())), str(d / w))

    first = next(iter(model.state_dict()))
    cases["empty weights"] = lambda d: (d / w).write_bytes(b"")
    cases["no weights"] = lambda d: (d / w).unlink()
    for n in (1, 7, 8, 9, 100, -1, -100):
        cases[f"truncated to {n}"] = lambda d, n=n: truncate(n if n > 0 else len((d / w).read_bytes()) + n)(d)
    cases["huge header"] = lambda d: (d / w).write_bytes(struct.pack("<Q", 2**40) + (d / w).read_bytes()[8:])
    cases["header longer than file"] = lambda d: (d / w).write_bytes(struct.pack("<Q", 10**6) + b"{}")
    cases["header not json"] = lambda d: (d / w).write_bytes(struct.pack("<Q", 4) + b"{{{{" + b"\0" * 64)
    cases["header a list"] = lambda d: (d / w).write_bytes(struct.pack("<Q", 2) + b"[]")
    cases["offsets past the end"] = set_header(lambda h: h[first].update(data_offsets=[0, 10**9]))
    cases["offsets reversed"] = set_header(lambda h: h[first].update(data_offsets=[8, 0]))
    cases["offsets a string"] = set_header(lambda h: h[first].update(data_offsets="0-8"))
    cases["unknown dtype"] = set_header(lambda h: h[first].update(dtype="F128"))
    cases["negative shape"] = set_header(lambda h: h[first].update(shape=[-1]))
    cases["entry a number"] = set_header(lambda h: h.update({first: 3}))
    cases["pickle renamed"] = lambda d: torch.save(model.state_dict(), d / w)
    cases["legacy pickle renamed"] = lambda d: (d / w).write_bytes(pickle.dumps({"a": 1}, protocol=2))

    def code_pickle(d):
        Payload.marker = tmp_path / "executed"
        (d / w).write_bytes(pickle.dumps({"weights": Payload()}))

    cases["pickle with code renamed"] = code_pickle
    cases["zip renamed"] = lambda d: (d / w).write_bytes(b"PK\x03\x04" + b"\0" * 100)
    cases["wrong shape"] = state_file(lambda s: {**s, first: torch.zeros(3, 3)})
    cases["extra key"] = state_file(lambda s: {**s, "encoders.image.mystery": torch.zeros(2)})
    cases["missing key"] = state_file(lambda s: {k: v for k, v in s.items() if k != first})
    cases["integer weights"] = state_file(lambda s: {**s, first: torch.zeros_like(s[first], dtype=torch.int32)})
    cases["nan weights"] = state_file(lambda s: {**s, first: torch.full_like(s[first], float("nan"))})
    cases["inf weights"] = state_file(lambda s: {**s, first: torch.full_like(s[first], float("inf"))})
    cases["no config"] = lambda d: (d / "config.json").unlink()
    cases["empty config"] = lambda d: (d / "config.json").write_text("")
    cases["config not json"] = lambda d: (d / "config.json").write_text('{"name": ')
    cases["config binary"] = lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    cases["config a list"] = set_config(lambda c: [c])
    cases["encoders a list"] = set_config(lambda c: {**c, "encoders": list(c["encoders"])})
    cases["encoders empty"] = set_config(lambda c: {**c, "encoders": {}})
    cases["encoder a string"] = set_config(lambda c: {**c, "encoders": {**c["encoders"], "image": "vit"}})
    cases["unknown field"] = set_config(
        lambda c: {**c, "encoders": {**c["encoders"], "image": {**c["encoders"]["image"], "mystery": 1}}}
    )
    cases["unknown modality"] = set_config(
        lambda c: {**c, "encoders": {**c["encoders"], "smell": {**c["encoders"]["imu"]}}}
    )
    cases["width a string"] = set_config(
        lambda c: {**c, "encoders": {**c["encoders"], "image": {**c["encoders"]["image"], "width": "wide"}}}
    )
    cases["zero heads"] = set_config(
        lambda c: {**c, "encoders": {**c["encoders"], "image": {**c["encoders"]["image"], "heads": 0}}}
    )
    cases["huge width"] = set_config(
        lambda c: {**c, "encoders": {**c["encoders"], "image": {**c["encoders"]["image"], "width": 2**40, "heads": 1}}}
    )
    cases["depth differs"] = set_config(
        lambda c: {
            **c,
            "encoders": {
                **c["encoders"],
                "image": {**c["encoders"]["image"], "depth": c["encoders"]["image"]["depth"] + 1},
            },
        }
    )
    cases["embed_dim null"] = set_config(lambda c: {**c, "embed_dim": None})
    cases["extra a list"] = set_config(lambda c: {**c, "extra": []})
    cases["no name"] = set_config(lambda c: {k: v for k, v in c.items() if k != "name"})
    return cases


EXPECTED = {
    "empty weights": "empty file",
    "truncated to 100": "truncated",
    "huge header": "exceeds",
    "offsets past the end": "outside",
    "pickle renamed": "never unpickles",
    "zip renamed": "never unpickles",
    "pickle with code renamed": "never unpickles",
    "wrong shape": "misshaped",
    "extra key": "no place for",
    "missing key": "missing 1 tensors",
    "nan weights": "non-finite",
    "inf weights": "non-finite",
    "no config": "config.json: missing",
    "config not json": "not valid JSON",
    "width a string": "width must be",
    "depth differs": "does not match config.json",
}


def test_every_corrupted_directory_is_one_model_load_error(saved, tmp_path):
    model, src = saved
    cases = corruptions(model, tmp_path)
    assert len(cases) >= 40
    for i, (name, damage) in enumerate(cases.items()):
        d = _copy(src, tmp_path / f"case{i}")
        damage(d)
        with pytest.raises(ModelLoadError) as err:
            bind.load_model(d)
            pytest.fail(f"{name}: loaded")
        msg = str(err.value)
        assert "\n" not in msg and str(d) in msg, (name, msg)
        assert EXPECTED.get(name, "") in msg, (name, msg)
        assert isinstance(err.value, BindError)
    assert not (tmp_path / "executed").exists()  # the pickle's code never ran


def test_bit_flips_load_or_fail_with_one_line(saved, tmp_path):
    model, src = saved
    raw = (src / WEIGHTS_NAME).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    rng = random.Random(0)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(60):  # flips in the length, the header and the data
        pos = rng.randrange(0, 8) if i < 10 else rng.randrange(8, 8 + n) if i < 40 else rng.randrange(8 + n, len(raw))
        data = bytearray(raw)
        data[pos] ^= 1 << rng.randrange(8)
        d = _copy(src, tmp_path / f"flip{i}")
        (d / WEIGHTS_NAME).write_bytes(bytes(data))
        try:
            bind.load_model(d)
            outcomes["loaded"] += 1
        except ModelLoadError as e:
            assert "\n" not in str(e) and str(d) in str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] >= 25  # every length flip and most header flips


def test_nonfinite_weights_load_with_the_expert_override(saved, tmp_path):
    model, src = saved
    d = _copy(src, tmp_path / "nan")
    first = next(iter(model.state_dict()))
    safetensors.torch.save_file(
        {**model.state_dict(), first: torch.full_like(model.state_dict()[first], float("nan"))}, str(d / WEIGHTS_NAME)
    )
    with pytest.raises(ModelLoadError, match=r"non-finite \(NaN / inf\) weights in 1 tensors .*allow_nonfinite"):
        bind.load_model(d)
    loaded = bind.load_model(d, allow_nonfinite=True)
    assert torch.isnan(loaded.state_dict()[first]).all()


def test_good_directory_round_trips(saved):
    model, src = saved
    loaded = bind.load_model(src)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_cli_with_corrupted_model_is_one_line_without_traceback(saved, tmp_path):
    _, src = saved
    d = _copy(src, tmp_path / "bad")
    (d / WEIGHTS_NAME).write_bytes((d / WEIGHTS_NAME).read_bytes()[:50])
    (tmp_path / "a.txt").write_text("hello")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bind",
            "embed",
            "--model",
            str(d),
            "--modality",
            "text",
            "--inputs",
            str(tmp_path / "a.txt"),
            "--out",
            str(tmp_path / "e.safetensors"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and f"{d / WEIGHTS_NAME}: truncated" in lines[0], r.stderr


# --- untrained encoders, gradients -----------------------------------------------------------------------------------


def get_example(model, m):
    if m == "image":
        return torch.randn(2, 3, 64, 64)
    return torch.randn(2, 6, model.preprocess_config("imu").window)


def test_named_config_with_random_weights_warns_once(caplog):
    model = bind.create_model("bind-tiny", modalities=["image", "imu"], precision="fp32")
    assert model.untrained_modalities == ["image", "imu"]
    with caplog.at_level(logging.WARNING, logger="bind.model"):
        model.embed({"image": get_example(model, "image")})
        model.embed({"imu": get_example(model, "imu")})
        model.encode("image", get_example(model, "image"))
    warnings = [r.getMessage() for r in caplog.records if r.name == "bind.model"]
    assert len(warnings) == 1
    assert "'bind-tiny'" in warnings[0] and "image, imu" in warnings[0] and "never trained or loaded" in warnings[0]
    assert "\n" not in warnings[0]


def test_trained_loaded_and_converted_models_do_not_warn(caplog, tmp_path):
    model = bind.create_model("bind-tiny", modalities=["image", "imu"], precision="fp32")
    random_dir = model.save_pretrained(tmp_path / "random")
    model.train()
    opt = torch.optim.SGD(model.encoder("image").parameters(), lr=0.1)
    model.encode("image", get_example(model, "image")).sum().backward()
    opt.step()
    model.eval()
    assert model.untrained_modalities == ["imu"]  # a training step moved the image encoder's weights
    model.encoder("imu").load_state_dict(bind.create_model("bind-tiny", modalities=["imu"]).encoder("imu").state_dict())
    assert model.untrained_modalities == []
    trained_dir = model.save_pretrained(tmp_path / "trained")
    assert json.loads((trained_dir / "config.json").read_text())["extra"]["untrained"] == []
    with caplog.at_level(logging.WARNING, logger="bind.model"):
        model.embed({"image": get_example(model, "image")})
        bind.load_model(trained_dir).embed({"imu": get_example(model, "imu")})
    assert not [r for r in caplog.records if r.name == "bind.model"]
    # a saved random model is still random: loading it does not make its embeddings meaningful
    assert bind.load_model(random_dir).untrained_modalities == ["image", "imu"]
    old = json.loads((trained_dir / "config.json").read_text())
    del old["extra"]["untrained"]  # saved before the flag existed: loaded weights, no warning
    (trained_dir / "config.json").write_text(json.dumps(old))
    assert bind.load_model(trained_dir).untrained_modalities == []


def test_eval_embeddings_carry_no_graph_training_does():
    model = bind.create_model("bind-tiny", modalities=["image"], precision="fp32")
    x = get_example(model, "image")
    out = model.eval().embed({"image": x})["image"]
    assert not out.requires_grad and out.grad_fn is None
    assert not model.encode("image", x).requires_grad
    assert not model.logit_scale("image").requires_grad
    assert model.train().encode("image", x).requires_grad and model.logit_scale("image").requires_grad


@pytest.mark.slow
def test_cli_embed_warns_once_for_a_named_config_and_not_for_a_loaded_model(tmp_path):
    texts = [tmp_path / f"t{i}.txt" for i in range(3)]
    for i, t in enumerate(texts):
        t.write_text(f"a red cube number {i}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

    def embed(model):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "bind",
                "embed",
                "--model",
                str(model),
                "--modality",
                "text",
                "--inputs",
                *map(str, texts),
                "--out",
                str(tmp_path / "e.safetensors"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        return [ln for ln in r.stderr.splitlines() if "never trained or loaded" in ln]

    lines = embed("bind-tiny")
    assert len(lines) == 1 and "'bind-tiny'" in lines[0] and "text" in lines[0]
    model = bind.create_model("bind-tiny", modalities=["text"])
    model.mark_untrained([])  # what loading / training / converting records
    assert embed(model.save_pretrained(tmp_path / "trained")) == []
