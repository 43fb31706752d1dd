"""Video-language question answering on top of a bind space.

Two recipes:

* :func:`multiple_choice` — zero-shot multiple choice by embeddings: each candidate answer becomes a text
  (``"{question} {choice}"``), and the candidate closest to the video (or any modality) embedding wins
  (the CLIP-style protocol of e.g. MSRVTT-MC evaluations).
* :class:`PrefixLMForQA` — a projector from the bind encoder's embedding into ``num_prefix_tokens`` input embeddings
  of a causal LM (LLaVA, Liu et al. 2023; ClipCap, Mokady et al. 2021); the bind encoder and optionally the LM stay
  frozen, the projector learns from (media, question, answer) triples with the LM loss on answer tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def multiple_choice(model, modality: str, media: torch.Tensor, questions: Sequence[str],
                    choices: Sequence[Sequence[str]], template: str = "{question} {choice}") -> tuple[torch.Tensor,
                                                                                                       torch.Tensor]:
    """Pick, for every sample, the answer whose text embedding is most similar to the media embedding.

    ``media``: a batch for ``modality`` ``[B, ...]``; ``questions``: B strings; ``choices``: B lists of answers (the
    same count per sample). Returns ``(predicted index [B], scores [B, C])``.
    """
    if len(questions) != len(choices) or len(questions) != media.shape[0]:
        raise ValueError(f"multiple_choice: {media.shape[0]} {modality} samples, {len(questions)} questions and "
                         f"{len(choices)} choice lists must match")
    n_choices = {len(c) for c in choices}
    if len(n_choices) != 1:
        raise ValueError(f"multiple_choice: every sample needs the same number of choices, got {sorted(n_choices)}")
    c = n_choices.pop()
    texts = [template.format(question=q, choice=a) for q, cs in zip(questions, choices) for a in cs]
    device = next(model.parameters()).device
    media_emb = model.encode(modality, media.to(device))
    text_emb = model.encode("text", model.prepare("text", texts).to(device)).reshape(len(questions), c, -1)
    scores = torch.einsum("bd,bcd->bc", media_emb, text_emb)
    return scores.argmax(dim=-1), scores


class PrefixLMForQA(nn.Module):
    """A frozen bind encoder + an MLP projector into ``num_prefix_tokens`` soft tokens + a causal LM.

    ``lm`` is any transformers causal LM (``get_input_embeddings`` and ``inputs_embeds`` support). Only the projector
    trains unless ``train_lm`` is set.
    """

    def __init__(self, bind_model, modality: str, lm: nn.Module, num_prefix_tokens: int = 4,
                 train_lm: bool = False) -> None:
        super().__init__()
        self.bind_model, self.modality, self.lm, self.k = bind_model, modality, lm, num_prefix_tokens
        hidden = lm.get_input_embeddings().embedding_dim
        d = bind_model.embed_dim
        self.projector = nn.Sequential(nn.Linear(d, hidden * num_prefix_tokens), nn.GELU(),
                                       nn.Linear(hidden * num_prefix_tokens, hidden * num_prefix_tokens))
        for p in self.bind_model.parameters():
            p.requires_grad_(False)
        for p in self.lm.parameters():
            p.requires_grad_(train_lm)

    def prefix(self, media: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            emb = self.bind_model.encode(self.modality, media)
        return self.projector(emb).reshape(emb.shape[0], self.k, -1)

    def forward(self, media: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """LM loss (answer tokens only: ``labels`` = -100 elsewhere) or logits when ``labels`` is None."""
        prefix = self.prefix(media)
        tokens = self.lm.get_input_embeddings()(input_ids)
        embeds = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)
        mask = torch.cat([attention_mask.new_ones(attention_mask.shape[0], self.k), attention_mask], dim=1)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits[:, self.k:]
        if labels is None:
            return logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=-100)

    @torch.no_grad()
    def answer_scores(self, media: torch.Tensor, prompt_ids: torch.Tensor, choice_ids: Sequence[torch.Tensor]):
        """Log-likelihood of each candidate answer continuation (rank answers with the LM), ``[B, C]``."""
        scores = []
        for ids in choice_ids:  # one [B, La] tensor per candidate
            full = torch.cat([prompt_ids, ids], dim=1)
            logits = self(media, full, torch.ones_like(full))
            logp = logits[:, prompt_ids.shape[1] - 1:-1].log_softmax(-1)
            scores.append(logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1).sum(-1))
        return torch.stack(scores, dim=1)
