"""Video-language question answering on top of a bind space (the library part; the questions about the
procedural world and its offline word-level LM are an application: :mod:`bind_world.qa`).

Two recipes (runnable end to end in ``examples/video_qa/``):

* **Multiple choice by embeddings** (:func:`multiple_choice`, :func:`multiple_choice_embeddings`): every candidate
  answer turns the question into a statement, and the statement closest to the media embedding wins — zero-shot,
  no training (the CLIP-style protocol of MSRVTT-MC evaluations). Media embeddings of several modalities can be fused
  first (:func:`fuse_embeddings`: weighted sum of unit vectors, re-normalised).
* **Generative QA through a projector into a causal LM** (:class:`PrefixLMForQA`): a frozen bind encoder's *token*
  outputs (:func:`encode_tokens`: the encoder's ``forward_features`` tokens, per-time-step means or adaptive pooling
  to K tokens) go through a 2-layer GELU MLP (LLaVA-1.5, Liu et al. 2023) into the input embeddings of any
  transformers causal LM, ahead of the question; the answer is generated greedily. Training follows Video-LLaVA
  (Lin et al. 2023): stage 1 trains the projector only, stage 2 adds LoRA on the LM (:func:`add_lm_lora`); the LM
  loss covers answer tokens only. :func:`fit` runs either stage with Lightning on cached (frozen) encoder tokens,
  with the warmup + cosine schedule of every bind training loop (:func:`bind.optim.warmup_cosine`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: how a question is put to the LM; the answer follows after a space
PROMPT = "question: {question} answer:"
PROJECTOR_WEIGHTS, PROJECTOR_CONFIG, ADAPTER_DIR = "projector.safetensors", "projector.json", "lm_adapter"


# --- questions and answers ------------------------------------------------------------------------------------------
_ARTICLE = re.compile(r"\b([Aa])( [aeiouAEIOU])")


def check_questions(questions: Sequence[str]) -> None:
    """``ValueError`` naming the first question that is not a non-empty string."""
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"question {i} is empty or not a string: {q!r}")


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation for exact match: lower case, no punctuation, no articles, single spaces."""
    text = "".join(" " if ch in string.punctuation else ch for ch in text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def accuracy_by_type(
    qtypes: Sequence[str],
    correct: Sequence[bool],
    chance: Mapping[str, float],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{qtype: {accuracy, chance, ratio, n, **extra[qtype]}}`` from per-question outcomes."""
    out: dict[str, dict[str, Any]] = {}
    for t in dict.fromkeys(qtypes):
        hits = [c for q, c in zip(qtypes, correct) if q == t]
        acc = sum(hits) / len(hits)
        out[t] = {
            "accuracy": acc,
            "chance": chance[t],
            "ratio": acc / chance[t],
            "n": len(hits),
            **(extra or {}).get(t, {}),
        }
    return out


def format_accuracy_table(results: Mapping[str, Mapping[str, Any]], columns: Sequence[str] = ()) -> str:
    """A plain-text table: question type, accuracy, chance, ratio, n (and ``columns`` taken from each row)."""
    head = f"{'question type':<14} {'accuracy':>8} {'chance':>7} {'ratio':>6} {'n':>5}" + "".join(
        f"  {c}" for c in columns
    )
    lines = [head, "-" * len(head)]
    for t, r in results.items():
        lines.append(
            f"{t:<14} {r['accuracy']:>8.1%} {r['chance']:>7.1%} {r['ratio']:>5.2f}x {r['n']:>5}"
            + "".join(f"  {r.get(c, '')}" for c in columns)
        )
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
def multiple_choice_embeddings(
    model,
    media_emb: torch.Tensor,
    questions: Sequence[str],
    choices: Sequence[Sequence[str]],
    template: str | Sequence[str] = "{question} {choice}",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick, for every sample, the candidate whose statement embeds closest to ``media_emb[i]`` (``[B, D]``).

    Each candidate becomes ``template.format(question=..., choice=...)`` (one template, or one per sample); samples
    may have different numbers of choices. Returns ``(predicted index [B], cosine scores [B, C_max])``, scores of
    missing choices ``-inf``.
    """
    if len(questions) != len(choices) or len(questions) != media_emb.shape[0]:
        raise ValueError(
            f"multiple_choice: {media_emb.shape[0]} media samples, {len(questions)} questions and "
            f"{len(choices)} choice lists must match"
        )
    check_questions(questions)
    empty = [i for i, cs in enumerate(choices) if not cs]
    if empty:
        raise ValueError(f"multiple_choice: question {empty[0]} ({questions[empty[0]]!r}) has no choices")
    templates = [template] * len(questions) if isinstance(template, str) else list(template)
    texts = [
        _ARTICLE.sub(r"\1n\2", t.format(question=q, choice=a))
        for q, cs, t in zip(questions, choices, templates)
        for a in cs
    ]
    unique = list(dict.fromkeys(texts))  # each distinct statement embedded once
    position = {t: i for i, t in enumerate(unique)}
    text_emb = model.embed_sources("text", unique, batch_size=256)[[position[t] for t in texts]]
    counts = torch.tensor([len(cs) for cs in choices])
    owner = torch.repeat_interleave(torch.arange(len(choices)), counts)
    media = F.normalize(media_emb.float(), dim=-1).to(text_emb.device)
    sims = (media[owner.to(text_emb.device)] * text_emb).sum(-1)
    scores = torch.full((len(questions), max(len(cs) for cs in choices)), float("-inf"), device=text_emb.device)
    start = 0
    for i, cs in enumerate(choices):
        scores[i, : len(cs)] = sims[start : start + len(cs)]
        start += len(cs)
    return scores.argmax(dim=-1), scores


@torch.no_grad()
def multiple_choice(
    model,
    modality: str,
    media: torch.Tensor,
    questions: Sequence[str],
    choices: Sequence[Sequence[str]],
    template: str | Sequence[str] = "{question} {choice}",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed ``media`` (a ``[B, ...]`` batch of ``modality``) and answer by :func:`multiple_choice_embeddings`."""
    if len(questions) != len(choices) or len(questions) != media.shape[0]:
        raise ValueError(
            f"multiple_choice: {media.shape[0]} {modality} samples, {len(questions)} questions and "
            f"{len(choices)} choice lists must match"
        )
    check_questions(questions)
    media_emb = model.embed_batch(modality, media)
    return multiple_choice_embeddings(model, media_emb, questions, choices, template)


# --- encoder tokens --------------------------------------------------------------------------------------------------
def _masked_adaptive_pool(x: torch.Tensor, k: int, valid: torch.Tensor | None) -> torch.Tensor:
    """Adaptive average pooling of ``[B, L, D]`` to ``[B, k, D]`` over the valid positions only."""
    if valid is None:
        return F.adaptive_avg_pool1d(x.transpose(1, 2), k).transpose(1, 2)
    w = valid.to(x.dtype).unsqueeze(1)  # [B, 1, L]
    num = F.adaptive_avg_pool1d(x.transpose(1, 2) * w, k)
    return (num / F.adaptive_avg_pool1d(w, k).clamp_min(1e-6)).transpose(1, 2)


def pool_tokens(
    tokens: torch.Tensor,
    k: int | None = None,
    *,
    num_cls: int = 1,
    time_steps: int | None = None,
    key_padding_mask: torch.Tensor | None = None,
    mode: str = "time",
    keep_cls: bool = False,
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
                raise ValueError(
                    f"pool_tokens: mode 'time' on joint tokens needs time_steps dividing the {n} patch "
                    f"tokens, got {time_steps}"
                )
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
def encode_tokens(
    model, modality: str, media: torch.Tensor, k: int | None = None, mode: str = "time", keep_cls: bool = False
) -> torch.Tensor:
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
    out = pool_tokens(
        tokens,
        k,
        num_cls=num_cls,
        time_steps=steps,
        key_padding_mask=layout.key_padding_mask,
        mode=mode,
        keep_cls=keep_cls,
    )
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
        raise ValueError(
            f"causal LM {name!r}: {path} exists but is not a transformers model directory (no config.json)"
        )
    target = str(path) if path.exists() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
        lm = AutoModelForCausalLM.from_pretrained(target, **({"dtype": dtype} if dtype is not None else {}))
    except (OSError, ValueError, KeyError) as e:
        where = (
            f"the directory {path} does not load"
            if path.exists()
            else f"no such directory, and not loadable as a hub id (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')})"
        )
        raise FileNotFoundError(f"causal LM {name!r}: {where}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if tokenizer.eos_token_id is None:
        raise ValueError(f"causal LM {name!r}: its tokenizer has no EOS token, so generated answers cannot end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


def add_lm_lora(
    lm: nn.Module,
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: str | Sequence[str] = "all-linear",
) -> nn.Module:
    """Wrap ``lm`` with peft LoRA adapters of rank ``rank`` (``alpha`` default ``2 * rank``) on ``targets``
    (default every linear layer but the output head, as QLoRA); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha or 2 * rank,
        lora_dropout=dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )
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

    def _sequences(
        self, prefix: torch.Tensor, questions: Sequence[str], answers: Sequence[str] | None
    ) -> tuple[list[torch.Tensor], list[list[int]]]:
        """Per sample: input embeddings and labels (-100 outside the answer + EOS)."""
        check_questions(questions)
        if len(questions) != prefix.shape[0] or (answers is not None and len(answers) != len(questions)):
            raise ValueError(
                f"PrefixLMForQA: {prefix.shape[0]} media, {len(questions)} questions"
                + ("" if answers is None else f" and {len(answers)} answers")
                + " must match"
            )
        embed = self.lm.get_input_embeddings()
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        prompts = self._ids([self.prompt.format(question=q.strip()) for q in questions])
        targets = (
            [[] for _ in questions]
            if answers is None
            else [ids + [self.tokenizer.eos_token_id] for ids in self._ids([" " + a.strip() for a in answers])]
        )
        seqs, labels = [], []
        for i, (p, a) in enumerate(zip(prompts, targets)):
            text = torch.tensor(p + a, dtype=torch.long, device=self._device)
            parts = [embed(torch.tensor(bos, dtype=torch.long, device=self._device)), prefix[i], embed(text)]
            seqs.append(torch.cat(parts))
            labels.append([-100] * (len(bos) + prefix.shape[1] + len(p)) + a)
        return seqs, labels

    def forward(
        self, tokens: Mapping[str, torch.Tensor] | torch.Tensor, questions: Sequence[str], answers: Sequence[str]
    ) -> torch.Tensor:
        """Mean LM cross-entropy over the answer tokens (and EOS) only."""
        seqs, labels = self._sequences(self.prefix(tokens), questions, answers)
        length = max(len(s) for s in seqs)
        embeds = torch.stack([F.pad(s, (0, 0, 0, length - len(s))) for s in seqs])  # right padding
        mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in seqs], device=self._device)
        target = torch.tensor([lab + [-100] * (length - len(lab)) for lab in labels], device=self._device)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits.float()
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), target[:, 1:].flatten(), ignore_index=-100)

    @torch.no_grad()
    def generate(
        self, tokens: Mapping[str, torch.Tensor] | torch.Tensor, questions: Sequence[str], max_new_tokens: int = 8
    ) -> list[str]:
        """Greedy answers, one string per sample (left-padded batch through ``lm.generate(inputs_embeds=...)``)."""
        seqs, _ = self._sequences(self.prefix(tokens), questions, None)
        length = max(len(s) for s in seqs)
        embeds = torch.stack([F.pad(s, (0, 0, length - len(s), 0)) for s in seqs])
        mask = torch.tensor([[0] * (length - len(s)) + [1] * len(s) for s in seqs], device=self._device)
        out = self.lm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
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
        config = {
            "token_dims": self.token_dims,
            "prompt": self.prompt,
            "lm_adapter": ADAPTER_DIR if lora else None,
            **meta,
        }
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
def fit(
    module: nn.Module,
    loss_fn: Callable[[Any], torch.Tensor],
    data: Sequence[Any],
    *,
    epochs: int,
    lr: float,
    batch_size: int = 32,
    collate: Callable[[list], Any] | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    stop: Callable[[int], bool] | None = None,
) -> list[float]:
    """Train ``module``'s trainable parameters on ``loss_fn(batch)`` with a Lightning ``Trainer`` (AdamW, warmup +
    cosine decay, CPU or the available accelerator); ``stop(epoch)`` (called after every epoch, module in eval mode)
    ends training early when it returns True. Returns the mean training loss of each epoch."""
    import lightning as L

    from bind.optim import warmup_cosine_schedule

    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit: the module has no trainable parameters")
    loader = torch.utils.data.DataLoader(
        list(data),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate or (lambda b: b),
        generator=torch.Generator().manual_seed(seed),
    )
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
            return {"optimizer": opt, "lr_scheduler": warmup_cosine_schedule(opt, max(1, total // 20), total)}

    L.seed_everything(seed, verbose=False)
    task = _Task()
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # no accelerator banners / tips per stage
    try:
        trainer = L.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            devices=1,
        )
        module.train()
        trainer.fit(task, loader)
    finally:
        quiet.setLevel(level)
        module.eval()
    return task.epoch_losses
