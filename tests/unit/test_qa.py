"""Video-language QA: world questions (bind_world.qa), multiple choice by embeddings, encoder token pooling,
projector + causal LM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bind_world.qa import QUESTION_TYPES, word_tokenizer, world_questions

import bind
from bind.qa import (
    PrefixLMForQA,
    check_questions,
    encode_tokens,
    fuse_embeddings,
    load_causal_lm,
    multiple_choice,
    multiple_choice_embeddings,
    normalize_answer,
    pool_tokens,
)


# --- token pooling ---------------------------------------------------------------------------------------------------
def test_pool_tokens_joint_per_time_step_and_adaptive():
    torch.manual_seed(0)
    b, t, n, d = 2, 4, 6, 8
    patches = torch.randn(b, t, n, d)
    cls = torch.randn(b, 1, d)
    joint = torch.cat([cls, patches.flatten(1, 2)], dim=1)  # [B, 1 + T*N, D], time-major
    per_step = pool_tokens(joint, num_cls=1, time_steps=t)
    torch.testing.assert_close(per_step, patches.mean(2))
    two = pool_tokens(joint, 2, num_cls=1, time_steps=t)
    torch.testing.assert_close(two, torch.stack([patches[:, :2].mean((1, 2)), patches[:, 2:].mean((1, 2))], 1))
    with_cls = pool_tokens(joint, 3, num_cls=1, time_steps=t, keep_cls=True)
    assert with_cls.shape == (b, 4, d)
    torch.testing.assert_close(with_cls[:, 0], cls[:, 0])
    seq = pool_tokens(joint, t * 2, num_cls=1, mode="sequence")  # each output: half a step's patches
    torch.testing.assert_close(seq[:, 1], patches[:, 0, n // 2 :].mean(1))
    with pytest.raises(ValueError, match="time_steps"):
        pool_tokens(joint, 2, num_cls=1)  # joint tokens carry no time axis by themselves
    with pytest.raises(ValueError, match="mode"):
        pool_tokens(joint, 2, mode="max")


def test_pool_tokens_divided_and_padding():
    torch.manual_seed(0)
    divided = torch.randn(2, 5, 1 + 9, 8)  # per-frame CLS first
    out = pool_tokens(divided, num_cls=1)
    torch.testing.assert_close(out, divided[:, :, 1:].mean(2))
    assert pool_tokens(divided, 3, num_cls=1, keep_cls=True).shape == (2, 4, 8)
    torch.testing.assert_close(pool_tokens(divided, 1, num_cls=1, keep_cls=True)[:, 0], divided[:, :, 0].mean(1))
    # padded tokens never leak into the pooled ones
    tokens = torch.randn(1, 1 + 8, 4)
    pad = torch.zeros(1, 9, dtype=torch.bool)
    pad[0, 5:] = True
    polluted = tokens.clone()
    polluted[0, 5:] = 1e6
    a = pool_tokens(polluted, 2, num_cls=1, mode="sequence", key_padding_mask=pad)
    torch.testing.assert_close(a[0, 0], tokens[0, 1:5].mean(0))
    assert a.abs().max() < 1e3


@pytest.mark.parametrize("attention", ["joint", "divided"])
def test_encode_tokens_from_a_video_encoder(attention, tiny_model):
    torch.manual_seed(0)
    model = bind.create_model("bind-tiny", modalities=["video"], attention=attention).eval()
    enc = model.encoder("video")
    steps = 4 // enc.stem.temporal_patch
    x = torch.randn(2, 3, 4, 32, 32)
    tokens = encode_tokens(model, "video", x)
    assert tokens.shape == (2, steps, enc.cfg.width)
    raw, _, _ = enc.forward_tokens(x)
    raw = enc.head.norm(raw)
    ref = raw[:, :, 1:].mean(2) if attention == "divided" else raw[:, 1:].reshape(2, steps, -1, raw.shape[-1]).mean(2)
    torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-4)
    assert encode_tokens(model, "video", x, 3, keep_cls=True).shape == (2, 4, enc.cfg.width)
    clips = torch.randn(2, 3, 3, 4, 32, 32)  # [B, clips, C, T, H, W]: pooled per clip, then averaged
    per_clip = encode_tokens(model, "video", clips.flatten(0, 1)).reshape(2, 3, steps, -1).mean(1)
    torch.testing.assert_close(encode_tokens(model, "video", clips), per_clip, atol=1e-5, rtol=1e-4)
    audio = encode_tokens(tiny_model, "audio", torch.randn(2, 2, 1, 128, 48), 4)  # no time axis: sequence pooling
    assert audio.shape == (2, 4, tiny_model.encoder("audio").cfg.width)


# --- multiple choice by embeddings -----------------------------------------------------------------------------------
def test_multiple_choice_scores_are_embedding_similarities(tiny_model):
    media = torch.randn(2, 3, 64, 64)
    questions = ["what shape is it?", "what colour is it?"]
    choices = [["a cube", "a sphere", "a cone"], ["red", "blue"]]  # different numbers of choices
    pred, scores = multiple_choice(tiny_model, "image", media, questions, choices)
    assert scores.shape == (2, 3) and pred.shape == (2,) and scores[1, 2] == float("-inf")
    with torch.no_grad():
        e = tiny_model.encode("image", media)
        t = tiny_model.encode("text", tiny_model.prepare("text", ["what colour is it? blue"]))
    torch.testing.assert_close(scores[1, 1], (e[1] * t[0]).sum(), atol=1e-5, rtol=0)
    assert torch.equal(pred, scores.argmax(-1))


def test_multiple_choice_picks_the_statement_nearest_the_media(tiny_model):
    choices = ["crimson", "emerald", "azure", "golden"]
    statements = [
        "a video of a crimson object.",
        "a video of an emerald object.",
        "a video of an azure object.",
        "a video of a golden object.",
    ]  # the template's "a" becomes "an" before a vowel
    with torch.no_grad():
        text = tiny_model.encode("text", tiny_model.prepare("text", statements))
    truth = torch.tensor([2, 0, 3, 1])
    media = text[truth]  # media that "show" the truth: embedded exactly where its statement is
    pred, scores = multiple_choice_embeddings(
        tiny_model, media, ["what colour is the object?"] * 4, [choices] * 4, "a video of a {choice} object."
    )
    assert torch.equal(pred, truth)
    torch.testing.assert_close(scores.max(-1).values, torch.ones(4))


def test_multiple_choice_rejects_bad_inputs(tiny_model):
    with pytest.raises(ValueError, match="must match"):
        multiple_choice(tiny_model, "image", torch.randn(1, 3, 64, 64), ["q", "q"], [["a"], ["b"]])
    with pytest.raises(ValueError, match=r"question 1 is empty"):
        multiple_choice(tiny_model, "image", torch.randn(2, 3, 64, 64), ["what is it?", "   "], [["a"], ["b"]])
    with pytest.raises(ValueError, match="no choices"):
        multiple_choice_embeddings(tiny_model, torch.randn(1, 64), ["what is it?"], [[]])
    with pytest.raises(ValueError, match="question 0"):
        check_questions([None])


def test_fuse_embeddings_is_a_normalised_weighted_sum():
    v, a = torch.randn(3, 16), torch.randn(3, 16)
    fused = fuse_embeddings({"video": v, "audio": a}, {"video": 0.5, "audio": 0.5})
    torch.testing.assert_close(fused.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(fused, F.normalize(F.normalize(v, dim=-1) + F.normalize(a, dim=-1), dim=-1))
    torch.testing.assert_close(fuse_embeddings({"video": v, "audio": a}, {"video": 1.0}), F.normalize(v, dim=-1))
    with pytest.raises(KeyError, match="depth"):
        fuse_embeddings({"video": v}, {"depth": 1.0})


# --- world questions -------------------------------------------------------------------------------------------------
def test_world_questions_follow_the_factors(tmp_path):
    from bind_world import generate
    from bind_world.captions import PARAPHRASE_PHRASES
    from bind_world.scene import FACTORS

    from bind.data.manifest import read_manifest

    records = read_manifest(generate(tmp_path / "w", n=4, seed=3, workers=1))
    qs = world_questions(records)
    assert len(qs) == 4 * len(QUESTION_TYPES)
    for q in qs:
        qt = QUESTION_TYPES[q.qtype]
        value = next(r for r in records if r.id == q.id).factors[qt.factor]
        assert q.answer == PARAPHRASE_PHRASES[qt.factor][value][0]
        assert len(q.choices) == len(FACTORS[qt.factor]) and q.question in qt.questions
        assert q.modality == qt.modality and str(q.sources[q.modality]).endswith(".mp4")  # the video's sound track
    assert all(str(q.sources["audio"]).endswith(".wav") for q in world_questions(records, audio_from="file"))
    assert len(world_questions(records, ["colour"], all_questions=True)) == 4 * len(QUESTION_TYPES["colour"].questions)
    with pytest.raises(ValueError, match="unknown question types"):
        world_questions(records, ["smell"])


def test_normalize_answer():
    assert normalize_answer("  The Ball! ") == normalize_answer("ball") == "ball"
    assert normalize_answer("moving left.") != normalize_answer("moving right")


# --- projector + causal LM -------------------------------------------------------------------------------------------
def _tiny_lm(texts: list[str], layers: int = 1):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = word_tokenizer(texts)
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=layers,
        n_head=2,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return GPT2LMHeadModel(cfg).eval(), tok


def test_prefix_lm_loss_covers_answer_tokens_only():
    lm, tok = _tiny_lm(["question: what colour is it? answer: red blue dark green"])
    qa = PrefixLMForQA(lm, tok, {"video": 12})
    assert not any(p.requires_grad for p in qa.lm.parameters())
    assert all(p.requires_grad for p in qa.projectors.parameters())
    tokens = torch.randn(2, 3, 12)
    questions, answers = ["what colour is it?", "what colour?"], ["red", "dark green"]
    loss = qa(tokens, questions, answers)
    # the same loss by hand: sequence = [BOS] prefix prompt answer EOS, targets = answer + EOS
    embed, nlls = lm.get_input_embeddings(), []
    with torch.no_grad():
        prefix = qa.prefix(tokens)
        for i, (q, a) in enumerate(zip(questions, answers)):
            p_ids = tok(f"question: {q} answer:", add_special_tokens=False)["input_ids"]
            a_ids = tok(" " + a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            x = torch.cat([embed(torch.tensor([tok.bos_token_id])), prefix[i], embed(torch.tensor(p_ids + a_ids))])
            logits = lm(inputs_embeds=x[None]).logits[0]
            start = 1 + prefix.shape[1] + len(p_ids)
            nlls.append(F.cross_entropy(logits[start - 1 : -1], torch.tensor(a_ids), reduction="none"))
    torch.testing.assert_close(loss.detach(), torch.cat(nlls).mean(), atol=1e-5, rtol=1e-5)
    loss.backward()
    assert qa.projectors["video"][0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="question 1 is empty"):
        qa(tokens, ["what colour?", ""], answers)
    with pytest.raises(KeyError, match="video"):
        qa.prefix({"audio": tokens})


def test_prefix_lm_learns_to_answer_and_generates_strings(tmp_path):
    lm, tok = _tiny_lm(["question: what colour is the object ? which colour ? answer: red blue"])
    qa = PrefixLMForQA(lm, tok, {"video": 8, "audio": 4})
    for p in qa.lm.parameters():  # a random LM has to learn the format too
        p.requires_grad_(True)
    torch.manual_seed(0)
    video = torch.stack([torch.full((2, 8), 1.0), torch.full((2, 8), -1.0)])
    audio = torch.randn(2, 3, 4)
    tokens = {"video": video, "audio": audio}
    questions, answers = ["what colour is the object?", "which colour?"], ["red", "blue"]
    opt = torch.optim.Adam([p for p in qa.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(40):
        loss = qa(tokens, questions, answers)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    qa.eval()
    assert losses[-1] < 0.1 * losses[0]
    out = qa.generate(tokens, questions, max_new_tokens=4)
    assert out == ["red", "blue"]
    # left padding: answers of a batch with prompts of different lengths equal one-by-one answers
    assert [qa.generate({m: t[i : i + 1] for m, t in tokens.items()}, questions[i : i + 1])[0] for i in range(2)] == out
    # stage 2 adapters + projector round-trip through save / load (around the same base LM)
    qa.lm.save_pretrained(tmp_path / "base")
    qa.use_lora(2)
    torch.nn.init.normal_(qa.lm.base_model.model.transformer.h[0].attn.c_attn.lora_B["default"].weight, std=0.5)
    qa.save(tmp_path / "qa", note="test")
    assert (tmp_path / "qa" / "projector.safetensors").is_file() and (tmp_path / "qa" / "lm_adapter").is_dir()
    from transformers import GPT2LMHeadModel

    again = PrefixLMForQA.load(tmp_path / "qa", GPT2LMHeadModel.from_pretrained(tmp_path / "base").eval(), tok)
    torch.testing.assert_close(again.prefix(tokens), qa.prefix(tokens))
    assert again.generate(tokens, questions, max_new_tokens=4) == qa.generate(tokens, questions, max_new_tokens=4)


def test_load_causal_lm_errors_name_the_lm(tmp_path):
    missing = tmp_path / "no-such-lm"
    with pytest.raises(FileNotFoundError, match="no-such-lm"):
        load_causal_lm(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a transformers model directory"):
        load_causal_lm(tmp_path / "empty")
    lm, tok = _tiny_lm(["question: answer: yes no"])
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    loaded, loaded_tok = load_causal_lm(tmp_path / "lm")
    assert loaded_tok.eos_token == "</s>" and loaded.config.n_embd == 32
