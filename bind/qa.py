"""Video-language question answering on top of a bind space.

Two recipes (runnable end to end in ``examples/video_qa/``):

* **Multiple choice by embeddings** (:func:`multiple_choice`, :func:`multiple_choice_embeddings`): every candidate
  answer turns the question into a statement, and the statement closest to the media embedding wins — zero-shot,
  no training (the CLIP-style protocol of MSRVTT-MC evaluations). Media embeddings of several modalities can be fused
  first (:func:`fuse_embeddings`: weighted sum of unit vectors, re-normalised).
* **Generative QA through a projector into a causal LM** (:class:`PrefixLMForQA`): a frozen bind encoder's *token*
  outputs (:func:`encode_tokens`: per-time-step means, or adaptive pooling to K tokens) go through a 2-layer GELU MLP
  (LLaVA-1.5, Liu et al. 2023) into the input embeddings of any transformers causal LM, ahead of the question; the
  answer is generated greedily. Training follows Video-LLaVA (Lin et al. 2023): stage 1 trains the projector only,
  stage 2 adds LoRA on the LM (:func:`add_lm_lora`); the LM loss covers answer tokens only. :func:`fit` runs either
  stage with Lightning on cached (frozen) encoder tokens.

World questions (:func:`world_questions`) ask for the latent factors of :mod:`bind.world` scenes that a medium
reveals (:data:`bind.world.scene.REVEALS`): colour, motion, activity and shape from the video, the sounding object
and its distance from the audio track. :func:`train_word_lm` trains the small offline GPT-2-style LM on the world's
text when no real LM is at hand.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: how a question is put to the LM; the answer follows after a space
PROMPT = "question: {question} answer:"
PROJECTOR_WEIGHTS, PROJECTOR_CONFIG, ADAPTER_DIR = "projector.safetensors", "projector.json", "lm_adapter"


# --- questions -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuestionType:
    """A kind of question about a world scene: the factor it asks for, the medium that reveals it, its phrasings
    (the first is canonical) and the statement a candidate answer turns it into (``{choice}`` placeholder)."""

    factor: str
    modality: str
    questions: tuple[str, ...]
    statement: str


QUESTION_TYPES: dict[str, QuestionType] = {
    "colour": QuestionType("colour", "video", ("what colour is the object?", "which colour does the object have?"),
                           "a video of a {choice} object."),
    "motion": QuestionType("motion", "video", ("which way is the object moving?", "what is the object doing?"),
                           "a video of an object {choice}."),
    "activity": QuestionType("activity", "video", ("what is the person holding the camera doing?",
                                                   "what is the camera operator doing?"),
                             "a video filmed by someone {choice}."),
    "shape": QuestionType("shape", "video", ("what object is it?", "what shape is the object?"),
                          "a video of a {choice}."),
    "sound": QuestionType("shape", "audio", ("what is making the sound?", "which object do you hear?"),
                          "the sound of a {choice}."),
    "distance": QuestionType("distance", "audio", ("how far away is the sound?", "how far off is the sounding object?"),
                             "the sound of an object {choice}."),
}
_ARTICLE = re.compile(r"\b([Aa])( [aeiouAEIOU])")


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


def world_questions(records: Sequence[Any], types: Sequence[str] | None = None,
                    phrases: Mapping[str, Mapping[str, Sequence[str]]] | None = None, phrasing: int = 0,
                    all_questions: bool = False, audio_from: str = "track") -> list[WorldQuestion]:
    """Questions about world manifest records (:class:`bind.data.manifest.ManifestRecord` with ``factors``).

    ``types``: keys of :data:`QUESTION_TYPES` (default all of them). Answers are worded by ``phrases[factor][value]
    [phrasing]`` (default :data:`bind.world.captions.PARAPHRASE_PHRASES`, wording never seen in training); every value
    of the factor is a choice. ``all_questions``: one question per phrasing, else the canonical one. ``audio_from``:
    ``track`` (the video's own audio track) or ``file`` (the record's audio file). Records without the medium a
    question needs are skipped.
    """
    from bind.world.captions import PARAPHRASE_PHRASES
    from bind.world.scene import FACTORS

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
                out.append(WorldQuestion(r.id, name, qt.modality, question, choices, values.index(value), qt.statement,
                                         sources))
    return out


def check_questions(questions: Sequence[str]) -> None:
    """``ValueError`` naming the first question that is not a non-empty string."""
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"question {i} is empty or not a string: {q!r}")


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation for exact match: lower case, no punctuation, no articles, single spaces."""
    text = "".join(" " if ch in string.punctuation else ch for ch in text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def accuracy_by_type(qtypes: Sequence[str], correct: Sequence[bool], chance: Mapping[str, float],
                     extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{qtype: {accuracy, chance, ratio, n, **extra[qtype]}}`` from per-question outcomes."""
    out: dict[str, dict[str, Any]] = {}
    for t in dict.fromkeys(qtypes):
        hits = [c for q, c in zip(qtypes, correct) if q == t]
        acc = sum(hits) / len(hits)
        out[t] = {"accuracy": acc, "chance": chance[t], "ratio": acc / chance[t], "n": len(hits),
                  **(extra or {}).get(t, {})}
    return out


def format_accuracy_table(results: Mapping[str, Mapping[str, Any]], columns: Sequence[str] = ()) -> str:
    """A plain-text table: question type, accuracy, chance, ratio, n (and ``columns`` taken from each row)."""
    head = f"{'question type':<14} {'accuracy':>8} {'chance':>7} {'ratio':>6} {'n':>5}" + "".join(
        f"  {c}" for c in columns)
    lines = [head, "-" * len(head)]
    for t, r in results.items():
        lines.append(f"{t:<14} {r['accuracy']:>8.1%} {r['chance']:>7.1%} {r['ratio']:>5.2f}x {r['n']:>5}"
                     + "".join(f"  {r.get(c, '')}" for c in columns))
    return "\n".join(lines)


# --- multiple choice by embeddings ------------------------------------------------------------------------------------
def fuse_embeddings(embeddings: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """``normalize(sum_m w_m * normalize(e_m))`` over the modalities in ``weights`` (ImageBind-style embedding
    arithmetic: the fused vector stays on the unit sphere)."""
    missing = [m for m in weights if m not in embeddings]
    if missing:
        raise KeyError(f"fuse_embeddings: no embeddings for {missing}; have {list(embeddings)}")
    fused = sum(w * F.normalize(embeddings[m].float(), dim=-1) for m, w in weights.items())
    return F.normalize(fused, dim=-1)


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Text embeddings ``[N, D]`` of ``texts`` (each distinct text is embedded once)."""
    unique = list(dict.fromkeys(texts))
    device = next(model.parameters()).device
    parts = [model.encode("text", model.prepare("text", unique[i:i + batch_size]).to(device))
             for i in range(0, len(unique), batch_size)]
    emb = torch.cat(parts) if parts else torch.empty(0, model.embed_dim, device=device)
    index = {t: i for i, t in enumerate(unique)}
    return emb[torch.tensor([index[t] for t in texts], dtype=torch.long, device=emb.device)]


@torch.no_grad()
def multiple_choice_embeddings(model, media_emb: torch.Tensor, questions: Sequence[str],
                               choices: Sequence[Sequence[str]],
                               template: str | Sequence[str] = "{question} {choice}") -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """Pick, for every sample, the candidate whose statement embeds closest to ``media_emb[i]`` (``[B, D]``).

    Each candidate becomes ``template.format(question=..., choice=...)`` (one template, or one per sample); samples
    may have different numbers of choices. Returns ``(predicted index [B], cosine scores [B, C_max])``, scores of
    missing choices ``-inf``.
    """
    if len(questions) != len(choices) or len(questions) != media_emb.shape[0]:
        raise ValueError(f"multiple_choice: {media_emb.shape[0]} media samples, {len(questions)} questions and "
                         f"{len(choices)} choice lists must match")
    check_questions(questions)
    empty = [i for i, cs in enumerate(choices) if not cs]
    if empty:
        raise ValueError(f"multiple_choice: question {empty[0]} ({questions[empty[0]]!r}) has no choices")
    templates = [template] * len(questions) if isinstance(template, str) else list(template)
    texts = [_ARTICLE.sub(r"\1n\2", t.format(question=q, choice=a))
             for q, cs, t in zip(questions, choices, templates) for a in cs]
    text_emb = embed_texts(model, texts)
    counts = torch.tensor([len(cs) for cs in choices])
    owner = torch.repeat_interleave(torch.arange(len(choices)), counts)
    media = F.normalize(media_emb.float(), dim=-1).to(text_emb.device)
    sims = (media[owner.to(text_emb.device)] * text_emb).sum(-1)
    scores = torch.full((len(questions), max(len(cs) for cs in choices)), float("-inf"), device=text_emb.device)
    start = 0
    for i, cs in enumerate(choices):
        scores[i, : len(cs)] = sims[start:start + len(cs)]
        start += len(cs)
    return scores.argmax(dim=-1), scores


@torch.no_grad()
def multiple_choice(model, modality: str, media: torch.Tensor, questions: Sequence[str],
                    choices: Sequence[Sequence[str]], template: str | Sequence[str] = "{question} {choice}"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed ``media`` (a ``[B, ...]`` batch of ``modality``) and answer by :func:`multiple_choice_embeddings`."""
    if len(questions) != len(choices) or len(questions) != media.shape[0]:
        raise ValueError(f"multiple_choice: {media.shape[0]} {modality} samples, {len(questions)} questions and "
                         f"{len(choices)} choice lists must match")
    check_questions(questions)
    media_emb = model.encode(modality, media.to(next(model.parameters()).device))
    return multiple_choice_embeddings(model, media_emb, questions, choices, template)


# --- encoder tokens --------------------------------------------------------------------------------------------------
def _masked_adaptive_pool(x: torch.Tensor, k: int, valid: torch.Tensor | None) -> torch.Tensor:
    """Adaptive average pooling of ``[B, L, D]`` to ``[B, k, D]`` over the valid positions only."""
    if valid is None:
        return F.adaptive_avg_pool1d(x.transpose(1, 2), k).transpose(1, 2)
    w = valid.to(x.dtype).unsqueeze(1)  # [B, 1, L]
    num = F.adaptive_avg_pool1d(x.transpose(1, 2) * w, k)
    return (num / F.adaptive_avg_pool1d(w, k).clamp_min(1e-6)).transpose(1, 2)


def pool_tokens(tokens: torch.Tensor, k: int | None = None, *, num_cls: int = 1, time_steps: int | None = None,
                key_padding_mask: torch.Tensor | None = None, mode: str = "time", keep_cls: bool = False
                ) -> torch.Tensor:
    """Pool an encoder's trunk tokens into a few visual tokens ``[B, K, D]`` for an LM.

    ``tokens``: ``[B, L, D]`` (joint attention: ``num_cls`` CLS tokens, then patches time-major) or ``[B, T, N, D]``
    (divided: ``num_cls`` CLS tokens per time step first). ``mode``: ``time`` averages the patches of each time step
    (one token per frame / tubelet step; joint tokens need ``time_steps``), then pools over time to ``k`` when given;
    ``sequence`` adaptively average-pools the whole patch sequence (time-major, so every output covers a contiguous
    span of steps and rows) to ``k``. ``key_padding_mask`` (``[B, L]``, True = padding) excludes padded tokens.
    ``keep_cls``: prepend the mean CLS token (``K + 1`` outputs).
    """
    if mode not in ("time", "sequence"):
        raise ValueError(f"pool_tokens: mode must be 'time' or 'sequence', got {mode!r}")
    valid = None if key_padding_mask is None else ~key_padding_mask.bool()
    if tokens.dim() == 4:  # divided: [B, T, C + N, D]
        cls, patches = tokens[:, :, :num_cls].mean(dim=(1, 2)), tokens[:, :, num_cls:]
        steps = patches.mean(dim=2) if mode == "time" else patches.flatten(1, 2)
        out = steps if k is None else _masked_adaptive_pool(steps, k, None)
    elif tokens.dim() == 3:
        cls, patches = tokens[:, :num_cls].mean(dim=1), tokens[:, num_cls:]
        valid = None if valid is None else valid[:, num_cls:]
        if mode == "time":
            n = patches.shape[1]
            if time_steps is None or time_steps < 1 or n % time_steps:
                raise ValueError(f"pool_tokens: mode 'time' on joint tokens needs time_steps dividing the {n} patch "
                                 f"tokens, got {time_steps}")
            grid = patches.reshape(patches.shape[0], time_steps, n // time_steps, -1)
            if valid is None:
                steps = grid.mean(dim=2)
            else:
                w = valid.reshape(valid.shape[0], time_steps, -1, 1).to(grid.dtype)
                steps = (grid * w).sum(2) / w.sum(2).clamp_min(1e-6)
            out = steps if k is None else _masked_adaptive_pool(steps, k, None)
        else:
            out = patches if k is None else _masked_adaptive_pool(patches, k, valid)
    else:
        raise ValueError(f"pool_tokens: expected [B, L, D] or [B, T, N, D] tokens, got shape {tuple(tokens.shape)}")
    if num_cls == 0 and keep_cls:
        raise ValueError("pool_tokens: keep_cls needs num_cls >= 1")
    return torch.cat([cls.unsqueeze(1), out], dim=1) if keep_cls else out


@torch.no_grad()
def encode_tokens(model, modality: str, media: torch.Tensor, k: int | None = None, mode: str = "time",
                  keep_cls: bool = False) -> torch.Tensor:
    """A frozen bind encoder's pooled token outputs ``[B, K, width]`` (after the head's LayerNorm), fp32.

    ``media``: ``[B, *sample]`` or ``[B, clips, *sample]`` (clips pooled alike and averaged). ``mode`` / ``k`` /
    ``keep_cls`` as in :func:`pool_tokens`; ``time`` falls back to ``sequence`` for modalities without a time axis
    the encoder exposes (audio spectrogram patches, IMU, images).
    """
    from bind.precision import autocast

    encoder = model.encoder(modality)
    device = next(encoder.parameters()).device
    media = media.to(device)
    clips = None
    if media.dim() == encoder.modality.sample_ndim + 2:
        clips, media = media.shape[1], media.flatten(0, 1)
    with autocast(getattr(model, "precision", "fp32"), device):
        tokens, layout = encoder.forward_features(media, norm=True)
    tokens, num_cls, steps = tokens.float(), layout.num_prefix_tokens, layout.time_steps
    steps = steps if tokens.dim() == 3 else None
    if mode == "time" and tokens.dim() == 3 and (steps is None or (tokens.shape[1] - num_cls) % steps):
        mode = "sequence"
    if num_cls == 0:
        keep_cls = False
    out = pool_tokens(tokens, k, num_cls=num_cls, time_steps=steps, key_padding_mask=layout.key_padding_mask,
                      mode=mode, keep_cls=keep_cls)
    return out if clips is None else out.reshape(-1, clips, *out.shape[1:]).mean(dim=1)


# --- projector + causal LM -------------------------------------------------------------------------------------------
def mlp_projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """LLaVA-1.5's projector: Linear -> GELU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def load_causal_lm(name_or_path: str | os.PathLike, dtype: torch.dtype | None = None) -> tuple[nn.Module, Any]:
    """``(AutoModelForCausalLM, AutoTokenizer)`` from a directory or a hub id; a clear error when neither loads.

    A tokenizer without a pad token pads with its EOS token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise ValueError(f"causal LM {name!r}: {path} exists but is not a transformers model directory "
                         "(no config.json)")
    target = str(path) if path.exists() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
        lm = AutoModelForCausalLM.from_pretrained(target, **({"dtype": dtype} if dtype is not None else {}))
    except (OSError, ValueError, KeyError) as e:
        where = (f"the directory {path} does not load" if path.exists() else
                 f"no such directory, and not loadable as a hub id (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')})")
        raise FileNotFoundError(f"causal LM {name!r}: {where}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if tokenizer.eos_token_id is None:
        raise ValueError(f"causal LM {name!r}: its tokenizer has no EOS token, so generated answers cannot end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


def add_lm_lora(lm: nn.Module, rank: int, alpha: float | None = None, dropout: float = 0.0,
                targets: str | Sequence[str] = "all-linear") -> nn.Module:
    """Wrap ``lm`` with peft LoRA adapters of rank ``rank`` (``alpha`` default ``2 * rank``) on ``targets``
    (default every linear layer but the output head, as QLoRA); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    cfg = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout,
                     target_modules=targets if isinstance(targets, str) else list(targets), task_type="CAUSAL_LM")
    return get_peft_model(lm, cfg)


class PrefixLMForQA(nn.Module):
    """Projected encoder tokens as a prefix of a causal LM: ``[BOS] [tokens of m1] [tokens of m2] ... question
    answer [EOS]`` (LLaVA / Video-LLaVA). One MLP projector per modality maps its pooled tokens (``token_dims[m]``
    features) into the LM's input embeddings. The LM is frozen unless wrapped with LoRA (:func:`add_lm_lora`).
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, token_dims: Mapping[str, int], prompt: str = PROMPT) -> None:
        super().__init__()
        if not token_dims:
            raise ValueError("PrefixLMForQA needs at least one modality in token_dims")
        self.lm, self.tokenizer, self.prompt = lm, tokenizer, prompt
        self.token_dims = dict(token_dims)
        hidden = lm.get_input_embeddings().embedding_dim
        self.projectors = nn.ModuleDict({m: mlp_projector(d, hidden) for m, d in self.token_dims.items()})
        for p in self.lm.parameters():
            p.requires_grad_(False)

    def use_lora(self, rank: int, **kwargs: Any) -> None:
        """Stage 2: LoRA adapters on the LM (trained along with the projectors)."""
        self.lm = add_lm_lora(self.lm, rank, **kwargs)

    def prefix(self, tokens: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Projected prefix ``[B, sum K_m, hidden]`` (a bare tensor stands for the only modality)."""
        if isinstance(tokens, torch.Tensor):
            if len(self.projectors) != 1:
                raise ValueError(f"pass a dict of tokens for the modalities {list(self.projectors)}")
            tokens = {next(iter(self.projectors)): tokens}
        missing = [m for m in self.projectors if m not in tokens]
        if missing:
            raise KeyError(f"PrefixLMForQA: no tokens for {missing}; it projects {list(self.projectors)}")
        dtype = self.lm.get_input_embeddings().weight.dtype
        return torch.cat([self.projectors[m](tokens[m].to(self._device)) for m in self.projectors], dim=1).to(dtype)

    @property
    def _device(self) -> torch.device:
        return next(self.projectors.parameters()).device

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def _sequences(self, prefix: torch.Tensor, questions: Sequence[str], answers: Sequence[str] | None
                   ) -> tuple[list[torch.Tensor], list[list[int]]]:
        """Per sample: input embeddings and labels (-100 outside the answer + EOS)."""
        check_questions(questions)
        if len(questions) != prefix.shape[0] or (answers is not None and len(answers) != len(questions)):
            raise ValueError(f"PrefixLMForQA: {prefix.shape[0]} media, {len(questions)} questions"
                             + ("" if answers is None else f" and {len(answers)} answers") + " must match")
        embed = self.lm.get_input_embeddings()
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        prompts = self._ids([self.prompt.format(question=q.strip()) for q in questions])
        targets = ([[] for _ in questions] if answers is None
                   else [ids + [self.tokenizer.eos_token_id] for ids in self._ids([" " + a.strip() for a in answers])])
        seqs, labels = [], []
        for i, (p, a) in enumerate(zip(prompts, targets)):
            text = torch.tensor(p + a, dtype=torch.long, device=self._device)
            parts = [embed(torch.tensor(bos, dtype=torch.long, device=self._device)), prefix[i], embed(text)]
            seqs.append(torch.cat(parts))
            labels.append([-100] * (len(bos) + prefix.shape[1] + len(p)) + a)
        return seqs, labels

    def forward(self, tokens: Mapping[str, torch.Tensor] | torch.Tensor, questions: Sequence[str],
                answers: Sequence[str]) -> torch.Tensor:
        """Mean LM cross-entropy over the answer tokens (and EOS) only."""
        seqs, labels = self._sequences(self.prefix(tokens), questions, answers)
        length = max(len(s) for s in seqs)
        embeds = torch.stack([F.pad(s, (0, 0, 0, length - len(s))) for s in seqs])  # right padding
        mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in seqs], device=self._device)
        target = torch.tensor([lab + [-100] * (length - len(lab)) for lab in labels], device=self._device)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits.float()
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), target[:, 1:].flatten(), ignore_index=-100)

    @torch.no_grad()
    def generate(self, tokens: Mapping[str, torch.Tensor] | torch.Tensor, questions: Sequence[str],
                 max_new_tokens: int = 8) -> list[str]:
        """Greedy answers, one string per sample (left-padded batch through ``lm.generate(inputs_embeds=...)``)."""
        seqs, _ = self._sequences(self.prefix(tokens), questions, None)
        length = max(len(s) for s in seqs)
        embeds = torch.stack([F.pad(s, (0, 0, length - len(s), 0)) for s in seqs])
        mask = torch.tensor([[0] * (length - len(s)) + [1] * len(s) for s in seqs], device=self._device)
        out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                               do_sample=False, num_beams=1, pad_token_id=self.tokenizer.pad_token_id,
                               eos_token_id=self.tokenizer.eos_token_id)
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]

    def save(self, directory: str | os.PathLike, **meta: Any) -> Path:
        """``projector.safetensors`` + ``projector.json`` (token dims, prompt, ``meta``) and, after stage 2, the
        LM's LoRA adapter in ``lm_adapter/`` (peft format)."""
        import safetensors.torch

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.projectors.state_dict().items()}
        safetensors.torch.save_file(state, directory / PROJECTOR_WEIGHTS)
        lora = hasattr(self.lm, "peft_config")
        if lora:
            self.lm.save_pretrained(directory / ADAPTER_DIR)
        config = {"token_dims": self.token_dims, "prompt": self.prompt, "lm_adapter": ADAPTER_DIR if lora else None,
                  **meta}
        (directory / PROJECTOR_CONFIG).write_text(json.dumps(config, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, lm: nn.Module, tokenizer: Any) -> PrefixLMForQA:
        """Rebuild from :meth:`save`'s output around the same base ``lm`` (its adapter is applied when saved)."""
        import safetensors.torch

        directory = Path(directory)
        if not (directory / PROJECTOR_CONFIG).is_file():
            raise FileNotFoundError(f"{directory} holds no {PROJECTOR_CONFIG} (not a saved PrefixLMForQA)")
        config = json.loads((directory / PROJECTOR_CONFIG).read_text())
        if config.get("lm_adapter"):
            from peft import PeftModel

            lm = PeftModel.from_pretrained(lm, directory / config["lm_adapter"])
        qa = cls(lm, tokenizer, config["token_dims"], prompt=config["prompt"])
        qa.projectors.load_state_dict(safetensors.torch.load_file(directory / PROJECTOR_WEIGHTS))
        return qa


# --- training (Lightning) -------------------------------------------------------------------------------------------
def fit(module: nn.Module, loss_fn: Callable[[Any], torch.Tensor], data: Sequence[Any], *, epochs: int,
        lr: float, batch_size: int = 32, collate: Callable[[list], Any] | None = None, weight_decay: float = 0.0,
        seed: int = 0, log: Callable[[str], None] | None = print,
        stop: Callable[[int], bool] | None = None) -> list[float]:
    """Train ``module``'s trainable parameters on ``loss_fn(batch)`` with a Lightning ``Trainer`` (AdamW, warmup +
    cosine decay, CPU or the available accelerator); ``stop(epoch)`` (called after every epoch, module in eval mode)
    ends training early when it returns True. Returns the mean training loss of each epoch."""
    import lightning as L

    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit: the module has no trainable parameters")
    loader = torch.utils.data.DataLoader(list(data), batch_size=batch_size, shuffle=True,
                                         collate_fn=collate or (lambda b: b),
                                         generator=torch.Generator().manual_seed(seed))
    total = epochs * len(loader)

    class _Task(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.epoch_losses, self._sum, self._n = module, [], 0.0, 0

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = loss_fn(batch)
            self._sum, self._n = self._sum + loss.item(), self._n + 1
            return loss

        def on_train_epoch_end(self) -> None:
            self.epoch_losses.append(self._sum / max(1, self._n))
            if log is not None:
                log(f"  epoch {len(self.epoch_losses)}/{epochs}: loss {self.epoch_losses[-1]:.4f}")
            self._sum, self._n = 0.0, 0
            if stop is not None:
                module.eval()
                with torch.no_grad():
                    self.trainer.should_stop = bool(stop(len(self.epoch_losses)))
                module.train()

        def configure_optimizers(self):
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * 0.5 * (1 + math.cos(math.pi * s / total)))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    L.seed_everything(seed, verbose=False)
    task = _Task()
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # no accelerator banners / tips per stage
    try:
        trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, devices=1)
        module.train()
        trainer.fit(task, loader)
    finally:
        quiet.setLevel(level)
        module.eval()
    return task.epoch_losses


def word_tokenizer(texts: Sequence[str]) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` (lower case, words and punctuation marks) with ``<pad> <s> </s>
    <unk>``, its vocabulary built on ``texts`` with the ``tokenizers`` library."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def train_word_lm(texts: Sequence[str], out: str | os.PathLike, *, n_layer: int = 2, n_embd: int = 64,
                  n_head: int = 4, epochs: int = 8, lr: float = 3e-3, batch_size: int = 64, dropout: float = 0.0,
                  seed: int = 0, log: Callable[[str], None] | None = print,
                  stop: Callable[[nn.Module, Any], bool] | None = None) -> Path:
    """Train a small GPT-2 on ``texts`` with a word-level tokenizer built on them (:func:`word_tokenizer`); saves
    both (``save_pretrained``) in ``out`` so :func:`load_causal_lm` reads it like any other LM. ``stop(lm,
    tokenizer)``, asked after every epoch, ends training early when it returns True."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = word_tokenizer(texts)
    ids = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
           for t in texts]
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=max(128, max(len(i) for i in ids) + 64), n_embd=n_embd,
                     n_layer=n_layer, n_head=n_head, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id)
    lm = GPT2LMHeadModel(cfg)

    def collate(batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(b) for b in batch)
        x = torch.tensor([b + [tokenizer.pad_token_id] * (length - len(b)) for b in batch])
        return x, torch.tensor([[1] * len(b) + [0] * (length - len(b)) for b in batch])

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, mask = batch
        labels = x.masked_fill(mask == 0, -100)
        return lm(input_ids=x, attention_mask=mask, labels=labels).loss

    fit(lm, loss_fn, ids, epochs=epochs, lr=lr, batch_size=batch_size, collate=collate, weight_decay=0.01, seed=seed,
        log=log, stop=None if stop is None else (lambda epoch: stop(lm, tokenizer)))
    out = Path(out)
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def world_lm_corpus(records: Sequence[Any], questions: Sequence[WorldQuestion], context_modalities: Sequence[str],
                    captions_per_record: int = 0, seed: int = 0) -> list[str]:
    """The offline LM's training text: every question in the form the projector will see it, with training captions
    of ``context_modalities`` standing where those modalities' tokens will go ("<video caption> <audio caption>
    question: ... answer: ..."), so the LM learns to read answers from its context; plus ``captions_per_record``
    full-scene captions per record (off by default: stand-alone captions made the frozen LM a worse reader of the
    projected tokens in our runs on the demo world — colour right about 52% vs 80% of the time)."""
    import numpy as np

    from bind.world.captions import caption

    rng = np.random.default_rng(seed)
    by_id = {r.id: r for r in records}
    texts = [caption(r.factors, "text", rng) for r in records for _ in range(captions_per_record)]
    for q in questions:
        context = " ".join(caption(by_id[q.id].factors, m, rng) for m in context_modalities)
        texts.append(f"{context} {PROMPT.format(question=q.question)} {q.answer}")
    return texts


@torch.no_grad()
def caption_qa_accuracy(lm: nn.Module, tokenizer: Any, records: Sequence[Any], questions: Sequence[WorldQuestion],
                        context_modalities: Sequence[str], seed: int = 1, batch_size: int = 128) -> dict[str, float]:
    """Exact-match accuracy per question type of ``lm`` answering from *text*: the training captions of
    ``context_modalities`` where the projected tokens will go. The ceiling of what a frozen LM can read from a
    perfect projector (stage 0's check that the LM reads its context)."""
    import numpy as np

    from bind.world.captions import caption

    rng = np.random.default_rng(seed)
    by_id = {r.id: r for r in records}
    prompts = [" ".join(caption(by_id[q.id].factors, m, rng) for m in context_modalities) + " "
               + PROMPT.format(question=q.question) for q in questions]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    device = next(lm.parameters()).device
    hits: dict[str, list[bool]] = {}
    for i in range(0, len(prompts), batch_size):
        ids = [bos + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[i:i + batch_size]]
        length = max(len(x) for x in ids)
        x = torch.tensor([[tokenizer.pad_token_id] * (length - len(t)) + t for t in ids], device=device)
        mask = torch.tensor([[0] * (length - len(t)) + [1] * len(t) for t in ids], device=device)
        out = lm.generate(input_ids=x, attention_mask=mask, max_new_tokens=8, do_sample=False, num_beams=1,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)[:, length:]
        for q, o in zip(questions[i:i + batch_size], out):
            hits.setdefault(q.qtype, []).append(
                normalize_answer(tokenizer.decode(o, skip_special_tokens=True)) == normalize_answer(q.answer))
    return {t: sum(h) / len(h) for t, h in hits.items()}
