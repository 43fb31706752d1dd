"""Shared fixtures: tiny models built from the registered ``bind-tiny`` config, temp media directories."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_model():
    import bind

    torch.manual_seed(0)
    return bind.create_model("bind-tiny").eval()
