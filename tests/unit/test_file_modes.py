"""Saved files follow the user's umask: with 022 others can read a saved model, index, embeddings, adapters and
checkpoints (files 0644, directories 0755); with 077 they stay private. (``tempfile`` gives 0600 / 0700, which a
temporary renamed into place used to keep.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bind
from bind.lora import apply_lora, save_adapters
from bind.retrieval.embed import EmbeddingSet
from bind.retrieval.index import Index
from bind.retrieval.model_info import ModelInfo
from bind.train.checkpoint import atomic_torch_save


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def mask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.lstat().st_mode) for p in paths}


def _assert_follow_umask(paths: list[Path], mask: int) -> None:
    for path in paths:
        modes = _modes(path)
        assert modes
        for name, mode in modes.items():
            want = (0o777 if (path.parent / name).is_dir() else 0o666) & ~mask
            assert mode == want, f"{name}: {oct(mode)} != {oct(want)} with umask {oct(mask)}"


def test_saved_files_follow_the_umask(mask, tmp_path):
    torch.manual_seed(0)
    model = bind.create_model("bind-tiny").eval()
    model_dir = model.save_pretrained(tmp_path / "model")

    info = ModelInfo.of(model, model_dir)
    vectors = F.normalize(torch.randn(20, info.embed_dim), dim=1)
    ids, sources = [f"r{i}" for i in range(20)], [f"/data/{i}.png" for i in range(20)]
    index = Index(info)
    index.add(vectors, ids, sources, "image", info)
    index_dir = index.save(tmp_path / "index")

    embeddings = [
        EmbeddingSet(vectors, ids, sources, "image", info, rows=list(range(20))).save(tmp_path / f"emb{s}")
        for s in (".safetensors", ".npz")
    ]

    apply_lora(model, "image", {"r": 2})
    adapters = save_adapters(model, tmp_path / "adapters")

    checkpoint = atomic_torch_save({"state_dict": model.state_dict(), "epoch": 1}, tmp_path / "ckpt" / "last.ckpt")

    saved = [
        Path(model_dir),
        Path(index_dir),
        *embeddings,
        *[EmbeddingSet.sidecar(e) for e in embeddings],
        Path(adapters),
        checkpoint.parent,
    ]
    _assert_follow_umask(saved, mask)
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]  # no temporaries left behind


def test_atomic_directory_gives_copied_subdirectories_the_umask_modes(mask, tmp_path):
    import shutil
    import tempfile

    from bind.io import atomic_directory

    with tempfile.TemporaryDirectory() as private:  # 0700, its files 0600
        (Path(private) / "sub").mkdir(mode=0o700)
        with open(Path(private) / "sub" / "vocab.txt", "w", opener=lambda p, f: os.open(p, f, 0o600)) as f:
            f.write("a b")
        with atomic_directory(tmp_path / "model") as tmp:
            shutil.copytree(private, tmp / "assets")
    _assert_follow_umask([tmp_path / "model"], mask)
