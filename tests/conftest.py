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
