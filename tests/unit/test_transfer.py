"""bind.transfer: the text path from input embeddings, prompt learning (CoOp / CoCoOp), adapters, save/load, bad
input, and ``bindspace transfer`` as a subprocess on a small world."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bind
from bind.registry import get_modality
from bind.retrieval.zeroshot import evaluate_zeroshot
from bind.transfer import (
    METHODS,
    CoCoOp,
    CoOp,
    LabelledFeatures,
    LinearProbe,
    TextSide,
    TipAdapter,
    TransferError,
    ZeroShot,
    load_head,
    load_task,
    make_head,
    save_head,
    shots_curve,
)

CLASSES = ["walking", "running", "standing still"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return bind.create_model("bind-tiny", modalities=["text", "imu"], precision="fp32").eval()


def _features(n_per_class: int, dim: int, seed: int = 0, classes: int = 3) -> LabelledFeatures:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = F.normalize(centres[y] + 0.5 * torch.randn(len(y), dim, generator=g), dim=-1)
    return LabelledFeatures(x, y, [str(i) for i in range(len(y))])


@pytest.mark.parametrize("name", ["bind-tiny", "bind-minilm-tiny"])
def test_text_path_from_input_embeddings_equals_token_ids(name):
    torch.manual_seed(0)
    m = bind.create_model(name, modalities=["text"], precision="fp32").eval()
    enc, cfg = m.encoder("text"), m.preprocess_config("text")
    texts = ["a person walking.", "hot", "a rotating cube far away, filmed by someone running"]
    pt = get_modality("text").prompt_tokens(texts, cfg, 0)
    with torch.no_grad():
        ref = m.encode("text", m.prepare("text", texts))
        out = enc.encode_text_embeddings(enc.input_embeddings()(pt.ids), pt.attention_mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    slots = get_modality("text").prompt_tokens(texts, cfg, 4)
    assert slots.start == 1 and slots.ids.shape[1] == pt.ids.shape[1] + 4
    assert slots.attention_mask[:, 1:5].all() and torch.equal(slots.ids[:, 5:], pt.ids[:, 1:])


def test_coop_step_changes_only_the_context(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.requires_grad for k, p in model.named_parameters()}
    head = CoOp(TextSide(model, "imu"), CLASSES, n_ctx=4, steps=3, lr=1e-2)
    ctx0 = head.ctx.detach().clone()
    head.fit(_features(4, model.embed_dim))
    assert not torch.equal(head.ctx.detach(), ctx0)  # the context learned
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # every tower weight bit-identical
    assert {k: p.requires_grad for k, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())
    assert [n for n, _ in head.named_parameters()] == ["ctx"]


def test_coop_learns_prompts_that_zero_shot_gets_wrong(model):
    text = TextSide(model, "imu")
    w = ZeroShot(text, CLASSES).weights
    y = torch.arange(3).repeat_interleave(8)
    noise = 0.05 * torch.randn(len(y), w.shape[1], generator=torch.Generator().manual_seed(0))
    data = LabelledFeatures(F.normalize(w[(y + 1) % 3] + noise, dim=-1), y)  # each class looks like the next name
    assert (ZeroShot(text, CLASSES).predict_logits(data.features).argmax(1) == y).sum() == 0
    head = CoOp(text, CLASSES, class_specific=True, steps=300).fit(data)
    assert torch.equal(head.predict_logits(data.features).argmax(1), y)


def test_unified_and_class_specific_context_shapes(model):
    text = TextSide(model, "imu")
    width = model.encoder("text").input_embeddings().embedding_dim
    unified = CoOp(text, CLASSES, n_ctx=5, ctx_init="random")
    specific = CoOp(text, CLASSES, n_ctx=5, ctx_init="random", class_specific=True)
    phrase = CoOp(text, CLASSES, ctx_init="motion of a person")
    assert unified.ctx.shape == (5, width) and specific.ctx.shape == (3, 5, width)
    assert phrase.ctx.shape == (4, width) and phrase.n_ctx == 4
    torch.testing.assert_close(phrase.ctx.detach(), text.phrase_embeddings("motion of a person"))
    for head in (unified, specific, phrase):
        assert head.class_embeddings().shape == (3, model.embed_dim)
    cocoop = CoCoOp(text, CLASSES, model.embed_dim, n_ctx=3, ctx_init="random")
    assert cocoop.meta_net[0].in_features == model.embed_dim and cocoop.meta_net[2].out_features == width
    x = _features(2, model.embed_dim).features
    assert cocoop.predict_logits(x).shape == (6, 3)
    with pytest.raises(TransferError, match="class-specific"):
        specific.with_classes(["a", "b"])


def test_prompt_context_starts_at_the_modality_template_by_default(model):
    """CoOp's recipe: the context starts as the hand-written prompt before the class name, so an untrained CoOp scores
    like that single template's zero-shot classifier."""
    from bind.transfer.methods import zeroshot_templates

    text = TextSide(model, "imu")
    template = zeroshot_templates("imu")[0]
    prefix = template.split("{}")[0].strip()
    coop = CoOp(text, CLASSES)
    assert coop.ctx_init == prefix and coop.n_ctx == len(text.phrase_embeddings(prefix))
    torch.testing.assert_close(coop.ctx.detach(), text.phrase_embeddings(prefix))
    single = ZeroShot(text, CLASSES, templates=[template])
    x = _features(3, model.embed_dim).features
    assert torch.equal(coop.predict_logits(x).argmax(1), single.predict_logits(x).argmax(1))
    assert CoCoOp(text, CLASSES, model.embed_dim).ctx_init == prefix
    assert CoOp(text, CLASSES, n_ctx=5, ctx_init="random").ctx_init is None


def test_untrained_cocoop_is_coop_and_its_steps_grow_with_the_shots(model, monkeypatch):
    """The meta-net starts at zero: CoCoOp's first prompt is CoOp's context (a default-initialised output layer adds
    its random bias, several token norms long and the same for every input, to every context vector, and the head
    fell back to one class as the shots grew); its mini-batch schedule runs ``epochs`` passes over the shots."""
    import bind.transfer.methods as methods

    text, data = TextSide(model, "imu"), _features(4, model.embed_dim)
    coop = CoOp(text, CLASSES, n_ctx=3, ctx_init="random", seed=5)
    cocoop = CoCoOp(text, CLASSES, model.embed_dim, n_ctx=3, ctx_init="random", seed=5)
    assert torch.equal(coop.ctx, cocoop.ctx)
    assert not cocoop.meta_net(data.features).any()
    torch.testing.assert_close(cocoop.predict_logits(data.features), coop.predict_logits(data.features))
    steps = []
    real = methods._optimise
    monkeypatch.setattr(methods, "_optimise", lambda p, f, n, lr, wd=0.0: steps.append(n) or real(p, f, 1, lr, wd))
    for k in (1, 4, 16):
        CoCoOp(text, CLASSES, model.embed_dim, n_ctx=3, batch_size=4, epochs=2).fit(_features(k, model.embed_dim))
    CoCoOp(text, CLASSES, model.embed_dim, n_ctx=3, steps=7).fit(data)
    assert steps == [2, 6, 24, 7]


def test_cocoop_meta_net_learns_at_its_own_rate(model):
    """The meta-net trains at ``meta_lr``, the context at ``lr``: AdamW's first step moves each weight by its group's
    learning rate (at one shared rate the meta-net's token outgrew a correction and new classes fell below
    zero-shot)."""
    text, data = TextSide(model, "imu"), _features(4, model.embed_dim)
    head = CoCoOp(text, CLASSES, model.embed_dim, n_ctx=3, ctx_init="random", steps=2, lr=2e-3, meta_lr=5e-4)
    head.meta_net[2].weight.data.normal_(0, 0.02)  # the output layer passes gradient to the hidden layer
    ctx0, hidden0, out0 = head.ctx.detach().clone(), *(head.meta_net[i].weight.detach().clone() for i in (0, 2))
    head.steps = 1
    head.fit(data)
    assert float((head.ctx.detach() - ctx0).abs().max()) == pytest.approx(2e-3, rel=1e-2)
    for w, w0 in ((head.meta_net[0].weight, hidden0), (head.meta_net[2].weight, out0)):
        assert float((w.detach() - w0).abs().max()) == pytest.approx(5e-4, rel=1e-2)
    assert head.config()["meta_lr"] == 5e-4


def test_tip_adapter_alpha_zero_equals_zero_shot(model):
    text, data = TextSide(model, "imu"), _features(4, model.embed_dim)
    zs = ZeroShot(text, CLASSES)
    tip = TipAdapter(text, CLASSES, model.embed_dim, alpha=0.0, search=False).fit(data)
    assert len(tip.keys) == 12
    assert torch.equal(tip.predict_logits(data.features), zs.predict_logits(data.features))
    tip.alpha = 1.0
    assert not torch.equal(tip.predict_logits(data.features), zs.predict_logits(data.features))


def test_linear_probe_is_regularised_towards_zero_shot(model):
    """Strong regularisation gives back the zero-shot classifier; weak fits the shots; validation picks between."""
    text = TextSide(model, "imu")
    zs = ZeroShot(text, CLASSES)
    x = F.normalize(torch.randn(30, model.embed_dim, generator=torch.Generator().manual_seed(3)), dim=-1)
    zs_pred = zs.logits(x).argmax(1)
    shots = LabelledFeatures(x, (zs_pred + 1) % 3, [str(i) for i in range(len(x))])  # labels zero-shot gets wrong
    strong = LinearProbe(text, CLASSES, model.embed_dim, c_grid=[1e-8]).fit(shots)
    # the prior: zero-shot's weights (the unpenalised bias only follows the shots' class frequencies)
    torch.testing.assert_close(strong.linear.weight, zs.scale * zs.weights, atol=1e-4, rtol=0)
    weak = LinearProbe(text, CLASSES, model.embed_dim, c_grid=[1e4]).fit(shots)
    assert (weak.logits(x).argmax(1) == shots.labels).float().mean() > 0.9  # the shots override it
    plain = LinearProbe(text, CLASSES, model.embed_dim, c_grid=[1e-8], prior=None).fit(shots)
    assert plain.linear.weight.abs().max() < 1e-4  # CLIP's probe shrinks towards zero instead
    # validation agreeing with zero-shot picks the strong end; agreeing with the shots, the weak end
    agree_zs = LabelledFeatures(x, zs_pred, shots.ids)
    grid = [1e-8, 1e4]
    assert LinearProbe(text, CLASSES, model.embed_dim, c_grid=grid).fit(shots, agree_zs).C == 1e-8
    assert LinearProbe(text, CLASSES, model.embed_dim, c_grid=grid).fit(shots, shots).C == 1e4


@pytest.mark.parametrize("method", METHODS)
def test_save_load_gives_identical_logits(model, method, tmp_path):
    text, train, val = TextSide(model, "imu"), _features(4, model.embed_dim), _features(2, model.embed_dim, seed=1)
    options = {"steps": 3} if method in ("coop", "cocoop", "clip-adapter", "tip-adapter-f") else {}
    head = make_head(method, text, CLASSES, model.embed_dim, **options).fit(train, val)
    save_head(head, tmp_path / "head", model)
    size = sum(f.stat().st_size for f in (tmp_path / "head").iterdir())
    assert size < 200_000  # small: the text tower is never stored
    again = load_head(tmp_path / "head", model)
    assert type(again) is type(head) and again.classnames == CLASSES
    x = _features(3, model.embed_dim, seed=2).features
    assert torch.equal(again.predict_logits(x), head.predict_logits(x))
    if method in ("zeroshot", "linear-probe", "coop", "cocoop"):
        assert torch.equal(again.class_embeddings(), head.class_embeddings())
        clf = again.zeroshot_classifier()  # learned prompts plug into bind.retrieval.zeroshot
        labels = [CLASSES[i] for i in clf.logits(x).argmax(1).tolist()]
        assert evaluate_zeroshot(clf, x, labels)["acc1"] == 1.0


def test_load_refuses_missing_or_other_model(model, tmp_path):
    head = CoOp(TextSide(model, "imu"), CLASSES, steps=1).fit(_features(2, model.embed_dim))
    save_head(head, tmp_path / "coop", model)
    with pytest.raises(TransferError, match="give the model"):
        load_head(tmp_path / "coop")
    torch.manual_seed(1)
    other = bind.create_model("bind-tiny", modalities=["text", "imu"], precision="fp32").eval()
    with pytest.raises(TransferError, match="learned on model"):
        load_head(tmp_path / "coop", other)


def _manifest(tmp_path: Path, rows: list[tuple[str, str | None]]) -> Path:
    lines = []
    for i, (split, label) in enumerate(rows):
        rec = {"id": f"s{i}", "split": split, "imu": f"media/{i}.npy", "factors": {}}
        if label is not None:
            rec["factors"]["activity"] = label
        lines.append(json.dumps(rec))
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _fake_embed(model, modality, items):
    g = torch.Generator().manual_seed(len(items))
    return [i for i, _ in items], torch.randn(len(items), model.embed_dim, generator=g), []


def test_bad_input_errors_and_named_skips(model, tmp_path):
    one = _manifest(tmp_path, [("train", "walking")] * 4 + [("test", "walking")] * 2)
    with pytest.raises(TransferError, match="at least two"):
        load_task(model, "imu", one, "factors.activity", embed=_fake_embed)
    rows = (
        [("train", "walking")] * 5
        + [("train", "running")] * 2
        + [("train", None)] * 2
        + [("val", "walking"), ("val", "running"), ("test", "walking"), ("test", "running"), ("test", "jumping")]
    )
    task = load_task(model, "imu", _manifest(tmp_path, rows), "factors.activity", embed=_fake_embed)
    reasons = {s["id"]: s["reason"] for s in task.skipped}
    assert reasons["s7"] == reasons["s8"] == "no label in field 'factors.activity'"
    assert "'jumping' not among the training classes" in reasons["s13"]
    assert task.labels == ["running", "walking"] and len(task.test) == 2
    with pytest.raises(TransferError, match="class 'running' has 2 train examples, fewer than 4 shots"):
        task.few_shot(4)
    result = shots_curve(task, TextSide(model, "imu"), ["zeroshot", "tip-adapter"], shots=(1, 4))
    assert result["shots"] == [1]
    assert result["skipped"] == [{"shots": 4, "reason": "classes with fewer than 4 training examples: 'running' (2)"}]
    with pytest.raises(TransferError, match="none of the 14 imu items has a label in field 'label'"):
        load_task(model, "imu", _manifest(tmp_path, rows), "label", embed=_fake_embed)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory, model):
    from bind_world.generator import generate
    from bind_world.scene import WorldConfig

    root = tmp_path_factory.mktemp("transfer_world")
    manifest = generate(root / "world", 40, seed=0, workers=1, config=WorldConfig(size=32, frames=8))
    model.save_pretrained(root / "model")
    return manifest, root / "model"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bind", "transfer", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _task_args(manifest: Path, model_dir: Path) -> list[str]:
    return [
        "--model",
        str(model_dir),
        "--modality",
        "imu",
        "--manifest",
        str(manifest),
        "--label-field",
        "factors.activity",
    ]


def test_cli_bench_default_flags_on_a_small_world(small_world, tmp_path):
    manifest, model_dir = small_world
    r = _cli("bench", *_task_args(manifest, model_dir), "--out", "bench", cwd=tmp_path)  # every method, shot count
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    curve = res["shots_curve"]
    assert set(curve["methods"]) == set(METHODS) and curve["shots"] == [1, 2, 4]
    assert [s["shots"] for s in curve["skipped"]] == [8, 16] and curve["chance"] == 0.25
    assert all(0 <= curve["methods"][m][str(k)]["acc"] <= 1 for m in METHODS for k in curve["shots"])
    assert set(res["base_to_new"]["methods"]) == {"zeroshot", "coop", "cocoop", "clip-adapter"}
    assert (tmp_path / "bench" / "accuracy_vs_shots.png").stat().st_size > 1000
    assert "zeroshot" in r.stdout and "base-to-new" in r.stdout


@pytest.mark.slow
def test_cli_fit_eval_search_and_errors(small_world, model, tmp_path):
    from bind.retrieval.embed import embed_items
    from bind.retrieval.index import Index, IndexSpec
    from bind.retrieval.model_info import ModelInfo

    manifest, model_dir = small_world
    task = _task_args(manifest, model_dir)
    r = _cli("fit", *task, "--shots", "2", "--steps", "3", "--out", "coop", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "coop" / "head.json").read_text())
    assert meta["method"] == "coop" and meta["label_field"] == "factors.activity" and "test acc1" in r.stdout
    r = _cli("eval", "--head", "coop", "--manifest", str(manifest), "--out", "eval.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["metrics"]["num_samples"] > 0 and res["method"] == "coop"

    saved = bind.load_model(model_dir)
    rows = map(json.loads, manifest.read_text().splitlines())
    items = [(rec["id"], str(manifest.parent / rec["imu"])) for rec in rows]
    index = Index(ModelInfo.of(saved, model_dir), IndexSpec(backend="torch"))
    index.add_embeddings(embed_items(saved, "imu", items))
    index.save(tmp_path / "index")
    r = _cli("search", "--head", "coop", "--index", "index", "--class", "running", "-k", "3", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["hits"]) == 3

    opts = ("--method", "cocoop", "--shots", "2", "--steps", "3", "--lr", "1e-3", "--meta-lr", "1e-4")
    r = _cli("fit", *task, *opts, "--out", "cc", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "cc" / "head.json").read_text())["config"]
    assert (config["lr"], config["meta_lr"]) == (1e-3, 1e-4)
    r = _cli("fit", *task, *opts[:-2], "--meta-lr", "-1", "--out", "bad", cwd=tmp_path)  # garbage before: acc 0.002
    assert r.returncode == 1 and "Traceback" not in r.stderr and "learning rates must be > 0" in r.stderr
    assert not (tmp_path / "bad").exists()
    r = _cli("fit", *task, "--steps", "0", "--out", "bad", cwd=tmp_path)
    assert r.returncode == 1 and "steps 0" in r.stderr and not (tmp_path / "bad").exists()

    r = _cli("fit", *task[:-1], "label", "--out", "bad", cwd=tmp_path)  # the world has no top-level label
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "has a label in field 'label'" in r.stderr and "factors.activity" in r.stderr
    r = _cli("fit", *task, "--shots", "100", "--out", "bad", cwd=tmp_path)
    assert r.returncode == 1 and "fewer than 100 shots" in r.stderr and "Traceback" not in r.stderr
