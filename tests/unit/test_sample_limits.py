"""Sample size limits are explicit ``Preprocess`` fields enforced by ``load`` with a :class:`MediaError` naming the
limit (images / depth / thermal from the header before decoding; audio bytes and seconds; video frames and seconds),
and the CLI's error policy: one line, ``--debug`` for the traceback."""

from __future__ import annotations

import numpy as np
import pytest
from media import indexed_frames, tone, write_audio, write_video
from PIL import Image, ImageFile

from bind.cli import run_guarded
from bind.errors import MediaError
from bind.registry import get_modality


def _cfg(modality: str, **fields):
    return get_modality(modality).preprocess_config(**fields)


@pytest.mark.parametrize("modality", ["image", "depth", "thermal"])
def test_max_pixels_is_checked_from_the_header(tmp_path, modality, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(np.full((60, 50), 1000, np.uint16)).save(path)
    plugin = get_modality(modality)
    plugin.process(path, _cfg(modality))  # the default limit accepts it
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(MediaError, match=r"50x60 = 3000 pixels exceeds preprocess max_pixels=2999"):
        plugin.load(path, _cfg(modality, max_pixels=2999))
    assert not decoded  # refused before decoding
    if modality != "image":
        with pytest.raises(MediaError, match="max_pixels=2999"):
            plugin.load(np.ones((60, 50), np.float32), _cfg(modality, max_pixels=2999))


def test_audio_limits(tmp_path):
    path = write_audio(tmp_path / "a.wav", tone(2.0))
    plugin = get_modality("audio")
    assert plugin.load(path, _cfg("audio")).shape[-1] == 32000
    with pytest.raises(MediaError, match=r"2\.0 s of audio \(from the header\) exceeds preprocess max_seconds=1"):
        plugin.load(path, _cfg("audio", max_seconds=1.0))
    with pytest.raises(MediaError, match=r"bytes exceeds preprocess max_bytes=1000"):
        plugin.load(path, _cfg("audio", max_bytes=1000))
    with pytest.raises(MediaError, match="max_seconds=1"):  # arrays: checked once known
        plugin.load(tone(2.0), _cfg("audio", max_seconds=1.0))


def test_video_limits(tmp_path):
    path = write_video(tmp_path / "v.mp4", indexed_frames(16, 32, 32), fps=8.0)
    plugin = get_modality("video")
    plugin.load(path, _cfg("video"))
    with pytest.raises(MediaError, match=r"16 frames exceeds preprocess max_frames=10"):
        plugin.load(path, _cfg("video", max_frames=10))
    with pytest.raises(MediaError, match=r"2\.0 s exceeds preprocess max_seconds=1"):
        plugin.load(path, _cfg("video", max_seconds=1.0))
    with pytest.raises(MediaError, match="max_frames=10"):
        plugin.load(indexed_frames(16, 32, 32), _cfg("video", max_frames=10))


def test_cli_errors_are_one_line_unless_debug(capsys):
    def boom(exc):
        def f():
            raise exc

        return f

    assert run_guarded("search", boom(KeyError("model"))) == 1
    assert capsys.readouterr().err == "bindspace search: error: missing key 'model'\n"
    assert run_guarded("eval", boom(FileNotFoundError(2, "No such file or directory", "m.jsonl"))) == 1
    assert capsys.readouterr().err == "bindspace eval: error: m.jsonl: No such file or directory\n"
    assert run_guarded("embed", boom(RuntimeError("shape mismatch\nmore"))) == 1
    err = capsys.readouterr().err
    assert err == (
        "bindspace embed: error: RuntimeError: shape mismatch; more (unexpected; run with --debug for the traceback)\n"
    )
    assert run_guarded("embed", boom(RuntimeError("x")), debug=True) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("run with --debug for the traceback)\n")
