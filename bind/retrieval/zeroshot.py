"""Zero-shot classification: class names + prompt templates -> text classifier weights -> argmax similarity.

Prompt ensembling as in CLIP (Radford et al. 2021, §3.1.4) and open_clip's ``build_zero_shot_classifier``: every
template is filled with the class name, the unit-norm text embeddings of one class are averaged and the mean is
re-normalised; an input is assigned the class whose weight vector it is most similar to. Works for any modality
embedded into the language space (ImageBind/LanguageBind evaluate audio, depth, thermal and video this way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bind.retrieval.metrics import classification_metrics


def templates_for(modality: str) -> list[str]:
    """The modality plugin's default prompt templates (``zeroshot_templates``, ``{}`` = the class name)."""
    from bind.registry import get_modality

    return list(get_modality(modality).zeroshot_templates)


def fill_template(template: str, classname: str) -> str:
    """``{c}`` (CLIP_benchmark) or ``{}`` (open_clip) placeholders."""
    return template.replace("{c}", classname) if "{c}" in template else template.format(classname)


@dataclass
class ZeroShotClassifier:
    """Unit-norm class weights ``[C, D]`` in the embedding space and their class names."""

    weights: torch.Tensor
    classnames: list[str]

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarities ``[N, C]`` of unit-norm ``embeddings [N, D]`` to every class."""
        return embeddings.float() @ self.weights.T

    def predict(self, embeddings: torch.Tensor) -> list[str]:
        return [self.classnames[i] for i in self.logits(embeddings).argmax(1).tolist()]


@torch.no_grad()
def build_classifier(
    model, classnames: Sequence[str], templates: Sequence[str], modality: str = "text", batch_size: int = 256
) -> ZeroShotClassifier:
    """Class weights from ``len(classnames) x len(templates)`` prompts, ensembled per class (mean of unit-norm
    embeddings, re-normalised)."""
    if not classnames or not templates:
        raise ValueError("zero-shot classification needs at least one class name and one template")
    prompts = [fill_template(t, c) for c in classnames for t in templates]
    emb = model.embed_sources(modality, prompts, batch_size=batch_size).float().cpu()
    emb = F.normalize(emb, dim=-1).reshape(len(classnames), len(templates), -1).mean(1)
    return ZeroShotClassifier(F.normalize(emb, dim=-1), list(classnames))


def evaluate_zeroshot(classifier: ZeroShotClassifier, embeddings: torch.Tensor, labels: Sequence[str]) -> dict:
    """``acc1``, ``acc5``, ``mean_per_class_recall`` of ``embeddings [N, D]`` with string ``labels``."""
    index = {c: i for i, c in enumerate(classifier.classnames)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown[:10]} are not among the {len(index)} class names")
    target = torch.tensor([index[label] for label in labels], dtype=torch.long)
    return classification_metrics(classifier.logits(embeddings), target)
