"""Questions about procedural-world scenes and the offline word-level LM that answers them: the world application of
:mod:`bind.qa` (used by ``examples/video_qa/``).

World questions (:func:`world_questions`) ask for the latent factors of :mod:`bind_world` scenes that a medium
reveals (:data:`bind_world.scene.REVEALS`): colour, motion, activity and shape from the video, the sounding object
and its distance from the audio track. :func:`train_word_lm` trains a small GPT-2-style LM on the world's text
(:func:`world_lm_corpus`) when no real LM is at hand; :func:`caption_qa_accuracy` checks that it reads answers from
its context.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bind.qa import PROMPT, fit, normalize_answer
from bind_world.captions import PARAPHRASE_PHRASES, caption
from bind_world.scene import FACTORS


@dataclass(frozen=True)
class QuestionType:
    """A kind of question about a world scene: the factor it asks for, the medium that reveals it, its phrasings
    (the first is canonical) and the statement a candidate answer turns it into (``{choice}`` placeholder)."""

    factor: str
    modality: str
    questions: tuple[str, ...]
    statement: str


QUESTION_TYPES: dict[str, QuestionType] = {
    "colour": QuestionType(
        "colour",
        "video",
        ("what colour is the object?", "which colour does the object have?"),
        "a video of a {choice} object.",
    ),
    "motion": QuestionType(
        "motion",
        "video",
        ("which way is the object moving?", "what is the object doing?"),
        "a video of an object {choice}.",
    ),
    "activity": QuestionType(
        "activity",
        "video",
        ("what is the person holding the camera doing?", "what is the camera operator doing?"),
        "a video filmed by someone {choice}.",
    ),
    "shape": QuestionType(
        "shape", "video", ("what object is it?", "what shape is the object?"), "a video of a {choice}."
    ),
    "sound": QuestionType(
        "shape", "audio", ("what is making the sound?", "which object do you hear?"), "the sound of a {choice}."
    ),
    "distance": QuestionType(
        "distance",
        "audio",
        ("how far away is the sound?", "how far off is the sounding object?"),
        "the sound of an object {choice}.",
    ),
}


@dataclass(frozen=True)
class WorldQuestion:
    """One question about one scene: its candidate answers, the index of the right one, and the media to use."""

    id: str
    qtype: str
    modality: str
    question: str
    choices: tuple[str, ...]
    label: int
    statement: str
    sources: Mapping[str, Any]

    @property
    def answer(self) -> str:
        return self.choices[self.label]


def world_questions(
    records: Sequence[Any],
    types: Sequence[str] | None = None,
    phrases: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    phrasing: int = 0,
    all_questions: bool = False,
    audio_from: str = "track",
) -> list[WorldQuestion]:
    """Questions about world manifest records (:class:`bind.data.manifest.ManifestRecord` with ``factors``).

    ``types``: keys of :data:`QUESTION_TYPES` (default all of them). Answers are worded by ``phrases[factor][value]
    [phrasing]`` (default :data:`bind_world.captions.PARAPHRASE_PHRASES`, wording never seen in training); every value
    of the factor is a choice. ``all_questions``: one question per phrasing, else the canonical one. ``audio_from``:
    ``track`` (the video's own audio track) or ``file`` (the record's audio file). Records without the medium a
    question needs are skipped.
    """
    phrases = PARAPHRASE_PHRASES if phrases is None else phrases
    types = list(QUESTION_TYPES) if types is None else list(types)
    unknown = [t for t in types if t not in QUESTION_TYPES]
    if unknown:
        raise ValueError(f"unknown question types {unknown}; known: {list(QUESTION_TYPES)}")
    if audio_from not in ("track", "file"):
        raise ValueError(f"audio_from must be 'track' or 'file', got {audio_from!r}")
    out = []
    for r in records:
        sources = {m: r.source(m) for m in ("video", "audio") if r.has(m)}
        if audio_from == "track" and r.has("video"):
            sources["audio"] = r.source("video")
        for name in types:
            qt = QUESTION_TYPES[name]
            value = r.factors.get(qt.factor)
            if qt.modality not in sources or value is None:
                continue
            values = FACTORS[qt.factor]
            choices = tuple(phrases[qt.factor][v][min(phrasing, len(phrases[qt.factor][v]) - 1)] for v in values)
            for question in qt.questions if all_questions else qt.questions[:1]:
                out.append(
                    WorldQuestion(
                        r.id, name, qt.modality, question, choices, values.index(value), qt.statement, sources
                    )
                )
    return out


def word_tokenizer(texts: Sequence[str]) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` (lower case, words and punctuation marks) with ``<pad> <s> </s>
    <unk>``, its vocabulary built on ``texts`` with the ``tokenizers`` library."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def train_word_lm(
    texts: Sequence[str],
    out: str | os.PathLike,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    epochs: int = 8,
    lr: float = 3e-3,
    batch_size: int = 64,
    dropout: float = 0.0,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    stop: Callable[[nn.Module, Any], bool] | None = None,
) -> Path:
    """Train a small GPT-2 on ``texts`` with a word-level tokenizer built on them (:func:`word_tokenizer`); saves
    both (``save_pretrained``) in ``out`` so :func:`load_causal_lm` reads it like any other LM. ``stop(lm,
    tokenizer)``, asked after every epoch, ends training early when it returns True."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = word_tokenizer(texts)
    ids = [
        [tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        for t in texts
    ]
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=max(128, max(len(i) for i in ids) + 64),
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    lm = GPT2LMHeadModel(cfg)

    def collate(batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(b) for b in batch)
        x = torch.tensor([b + [tokenizer.pad_token_id] * (length - len(b)) for b in batch])
        return x, torch.tensor([[1] * len(b) + [0] * (length - len(b)) for b in batch])

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, mask = batch
        labels = x.masked_fill(mask == 0, -100)
        return lm(input_ids=x, attention_mask=mask, labels=labels).loss

    fit(
        lm,
        loss_fn,
        ids,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        collate=collate,
        weight_decay=0.01,
        seed=seed,
        log=log,
        stop=None if stop is None else (lambda epoch: stop(lm, tokenizer)),
    )
    out = Path(out)
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def world_lm_corpus(
    records: Sequence[Any],
    questions: Sequence[WorldQuestion],
    context_modalities: Sequence[str],
    captions_per_record: int = 0,
    seed: int = 0,
) -> list[str]:
    """The offline LM's training text: every question in the form the projector will see it, with training captions
    of ``context_modalities`` standing where those modalities' tokens will go ("<video caption> <audio caption>
    question: ... answer: ..."), so the LM learns to read answers from its context; plus ``captions_per_record``
    full-scene captions per record (off by default: stand-alone captions made the frozen LM a worse reader of the
    projected tokens in our runs on the demo world — colour right about 52% vs 80% of the time)."""
    rng = np.random.default_rng(seed)
    by_id = {r.id: r for r in records}
    texts = [caption(r.factors, "text", rng) for r in records for _ in range(captions_per_record)]
    for q in questions:
        context = " ".join(caption(by_id[q.id].factors, m, rng) for m in context_modalities)
        texts.append(f"{context} {PROMPT.format(question=q.question)} {q.answer}")
    return texts


@torch.no_grad()
def caption_qa_accuracy(
    lm: nn.Module,
    tokenizer: Any,
    records: Sequence[Any],
    questions: Sequence[WorldQuestion],
    context_modalities: Sequence[str],
    seed: int = 1,
    batch_size: int = 128,
) -> dict[str, float]:
    """Exact-match accuracy per question type of ``lm`` answering from *text*: the training captions of
    ``context_modalities`` where the projected tokens will go. The ceiling of what a frozen LM can read from a
    perfect projector (stage 0's check that the LM reads its context)."""
    rng = np.random.default_rng(seed)
    by_id = {r.id: r for r in records}
    prompts = [
        " ".join(caption(by_id[q.id].factors, m, rng) for m in context_modalities)
        + " "
        + PROMPT.format(question=q.question)
        for q in questions
    ]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    device = next(lm.parameters()).device
    hits: dict[str, list[bool]] = {}
    for i in range(0, len(prompts), batch_size):
        ids = [bos + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[i : i + batch_size]]
        length = max(len(x) for x in ids)
        x = torch.tensor([[tokenizer.pad_token_id] * (length - len(t)) + t for t in ids], device=device)
        mask = torch.tensor([[0] * (length - len(t)) + [1] * len(t) for t in ids], device=device)
        out = lm.generate(
            input_ids=x,
            attention_mask=mask,
            max_new_tokens=8,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )[:, length:]
        for q, o in zip(questions[i : i + batch_size], out):
            hits.setdefault(q.qtype, []).append(
                normalize_answer(tokenizer.decode(o, skip_special_tokens=True)) == normalize_answer(q.answer)
            )
    return {t: sum(h) / len(h) for t, h in hits.items()}
