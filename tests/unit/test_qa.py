"""Video-language QA recipes: multiple choice by embeddings, and a projector into a (tiny) causal LM."""

from __future__ import annotations

import pytest
import torch

import bind
from bind.qa import PrefixLMForQA, multiple_choice


def test_multiple_choice_scores_are_embedding_similarities(tiny_model):
    media = torch.randn(2, 3, 64, 64)
    questions = ["what shape is it?", "what colour is it?"]
    choices = [["a cube", "a sphere", "a cone"], ["red", "blue", "green"]]
    pred, scores = multiple_choice(tiny_model, "image", media, questions, choices)
    assert scores.shape == (2, 3) and pred.shape == (2,)
    with torch.no_grad():
        e = tiny_model.encode("image", media)
        t = tiny_model.encode("text", tiny_model.prepare("text", ["what colour is it? blue"]))
    torch.testing.assert_close(scores[1, 1], (e[1] * t[0]).sum(), atol=1e-5, rtol=0)
    assert torch.equal(pred, scores.argmax(-1))


def test_multiple_choice_rejects_ragged_inputs(tiny_model):
    with pytest.raises(ValueError, match="same number of choices"):
        multiple_choice(tiny_model, "image", torch.randn(2, 3, 64, 64), ["q", "q"], [["a", "b"], ["a"]])
    with pytest.raises(ValueError, match="must match"):
        multiple_choice(tiny_model, "image", torch.randn(1, 3, 64, 64), ["q", "q"], [["a"], ["b"]])


def test_prefix_lm_projector_learns_to_answer():
    from transformers import GPT2Config, GPT2LMHeadModel

    from modalities.text import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer("minilm")
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=32)).eval()
    model = bind.create_model("bind-tiny", modalities=["image", "text"]).eval()
    qa = PrefixLMForQA(model, "image", lm, num_prefix_tokens=2, train_lm=True)  # a random LM must learn too
    assert not any(p.requires_grad for p in model.parameters())
    colours = {"red": (1.0, -1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}
    media = torch.stack([torch.tensor(c).view(3, 1, 1).expand(3, 64, 64) for c in colours.values()])
    media = media + 0.05 * torch.randn_like(media)
    texts = [f"colour ? {c}" for c in colours]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_len = len(tok("colour ?", add_special_tokens=False)["input_ids"])
    labels = batch["input_ids"].clone()
    labels[:, :prompt_len] = -100
    opt = torch.optim.Adam([p for p in qa.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(60):
        loss = qa(media, batch["input_ids"], batch["attention_mask"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    prompt = batch["input_ids"][:, :prompt_len]
    choice_ids = [torch.tensor([[tok.convert_tokens_to_ids(c)]] * 2) for c in colours]
    scores = qa.answer_scores(media, prompt, choice_ids)
    assert scores.argmax(-1).tolist() == [0, 1]
