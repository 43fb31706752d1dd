"""Shared fixtures: tiny models built from the registered ``bind-tiny`` config, temp media directories."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("BIND_PRECISION", "fp32")  # `auto` would pick bf16 on CPUs with native bf16: keep tests exact
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_model():
    import bind

    torch.manual_seed(0)
    return bind.create_model("bind-tiny").eval()


#: a 32-pixel image encoder with 8-pixel patches: the encoder the training-loss tests fit
TINY_IMAGE_ENCODERS = {"image": {"stem": {"patch_size": 8}, "preprocess": {"size": 32, "crop_size": 32}}}


@pytest.fixture
def fit_tiny_image():
    """``fit(manifest, run_dir, **options)`` of :data:`TINY_IMAGE_ENCODERS` against MiniLM-tiny (fp32, CPU, batch 16,
    no export): the training-loss tests vary only ``options``."""
    from bind.train import fit

    def run(manifest, run_dir, **options):
        return fit(
            manifest,
            modalities=["image"],
            model="bind-minilm-tiny",
            run_dir=run_dir,
            batch_size=16,
            num_workers=0,
            export=False,
            progress_bar=False,
            encoders=TINY_IMAGE_ENCODERS,
            precision="fp32",
            accelerator="cpu",
            **options,
        )

    return run
