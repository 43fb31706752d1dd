"""``anchor_alignment``: a cosine term that pulls each embedding onto its own caption's anchor embedding, added to the
contrastive loss (which only ranks captions and leaves the offset between a modality and its captions free)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lightning")

ENCODERS = {"image": {"stem": {"patch_size": 8}, "preprocess": {"size": 32, "crop_size": 32}}}


def _batch(module, n: int = 6) -> dict:
    from bind.registry import get_modality

    text, cfg = get_modality("text"), module.model.preprocess_config("text")
    captions = [f"a photo of shape number {i}." for i in range(n)]
    return {
        "ids": [str(i) for i in range(n)],
        "inputs": {"image": torch.rand(n, 3, 32, 32)},
        "anchors": {"image": torch.stack([text.process(c, cfg) for c in captions])},
        "anchor_keys": {"image": captions},
    }


def test_the_term_is_the_weighted_mean_cosine_gap_over_the_contrastive_loss():
    from bind.train.module import BindTrainModule

    torch.manual_seed(0)
    plain = BindTrainModule(model="bind-minilm-tiny", modalities=["image"], encoders=ENCODERS).eval()
    aligned = BindTrainModule(
        model="bind-minilm-tiny", modalities=["image"], encoders=ENCODERS, anchor_alignment={"image": 2.0}
    ).eval()
    aligned.load_state_dict(plain.state_dict())
    batch = _batch(plain)
    with torch.no_grad():
        base, n = plain.pair_losses(batch)["image"]
        total, n2 = aligned.pair_losses(batch)["image"]
        emb = plain.model.encode("image", batch["inputs"]["image"])
        anc = plain._anchor_embed(batch["anchors"]["image"])
    gap = (1 - F.cosine_similarity(emb, anc, dim=-1)).mean()
    assert n == n2 == 6 and gap > 0.1
    assert torch.allclose(total - base, 2.0 * gap, atol=1e-5)


def test_training_with_it_closes_the_gap_between_items_and_their_captions(tmp_path, fit_tiny_image):
    from bind_world.shapes import write_shapes_dataset

    from bind.data.manifest import read_manifest

    manifest = write_shapes_dataset(tmp_path / "shapes", train=48, val=16, size=32)
    gaps = {}
    for beta in (0.0, 1.0):
        result = fit_tiny_image(manifest, tmp_path / f"run{beta}", max_epochs=3, anchor_alignment=beta)
        model = result.model.eval()
        records = read_manifest(manifest, "val")
        emb = model.embed_sources("image", [str(r.media["image"]) for r in records])
        anc = model.embed_sources("text", [r.anchor_captions("image")[0] for r in records])
        gaps[beta] = float((1 - (emb * anc).sum(-1)).mean())
    assert gaps[1.0] < 0.8 * gaps[0.0], gaps  # measured 0.95 -> 0.65


def test_weights_are_checked():
    from bind.train.module import BindTrainModule

    with pytest.raises(ValueError, match="anchor_alignment: every weight must be >= 0"):
        BindTrainModule(model="bind-minilm-tiny", modalities=["image"], anchor_alignment=-1.0)
    with pytest.raises(ValueError, match=r"anchor_alignment names \['video'\], not trained"):
        BindTrainModule(model="bind-minilm-tiny", modalities=["image"], anchor_alignment={"video": 0.5})
