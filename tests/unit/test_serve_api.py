"""``bindspace serve``'s JSON API through FastAPI's TestClient on a tiny saved model and a small world index: the same
hits as ``bindspace search``, uploads of every modality, summed queries, more-like-this, gallery filters, readable
errors that leave the server running, uploads deleted, and files served only by item id (path traversal and
symlinks pointing out of the media directory refused)."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from bind.cli import main  # noqa: E402
from bind.retrieval.index import Index  # noqa: E402
from bind.retrieval.query import embed_query  # noqa: E402
from bind.serve.app import Gallery, create_app  # noqa: E402
from bind.serve.cli import load_gallery  # noqa: E402

N = 6
MODALITIES = ["text", "image", "video", "audio", "depth", "thermal", "imu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved tiny model, a world of every modality and an index of all of it built by the CLI."""
    from bind_world import WorldConfig, generate

    import bind

    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    bind.create_model("bind-tiny").eval().save_pretrained(root / "model")
    manifest = generate(root / "world", n=N, seed=0, workers=1, config=WorldConfig(size=32, frames=8))
    assert (
        main(
            [
                "index",
                "build",
                "--model",
                str(root / "model"),
                "--modality",
                *MODALITIES,
                "--manifest",
                str(manifest),
                "--out",
                str(root / "idx"),
                "-q",
            ]
        )
        == 0
    )
    gallery = load_gallery([str(root / "idx")])
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {
        "root": root,
        "gallery": gallery,
        "client": TestClient(create_app(gallery)),
        "records": records,
        "media": root / "world",
    }


def _search(client, queries, k=5, **extra):
    r = client.post("/api/search", json={"queries": queries, "k": k, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _upload(client, path: Path, modality: str | None = None, name: str | None = None, data: bytes | None = None):
    files = {"file": (name or path.name, data if data is not None else path.read_bytes())}
    return client.post("/api/uploads", files=files, params={"modality": modality} if modality else None)


def test_info_names_model_fingerprint_and_sizes(world):
    info = world["client"].get("/api/info").json()
    index = Index.load(world["root"] / "idx")
    assert info["model"]["fingerprint"] == index.model.fingerprint and info["model"]["name"] == "bind-tiny"
    assert info["indexes"][0]["size"] == len(index) == N * len(MODALITIES)
    assert info["indexes"][0]["modalities"] == {m: N for m in MODALITIES}
    assert set(info["query_modalities"]) == set(MODALITIES)
    page = world["client"].get("/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    assert world["client"].get("/static/app.js").status_code == 200


def test_text_and_summed_search_give_the_cli_hits(world, capsys):
    client, idx = world["client"], world["root"] / "idx"
    audio = world["media"] / world["records"][2]["audio"]
    token = _upload(client, audio).json()["upload"]
    for queries, argv in [
        ([{"text": "a red cube moving left"}], ["--text", "a red cube moving left"]),
        ([{"text": "a hot sphere"}, {"upload": token}], ["--text", "a hot sphere", "--file", f"audio:{audio}"]),
    ]:
        api = _search(client, queries, k=8)
        capsys.readouterr()
        assert main(["search", "--index", str(idx), "-k", "8", "--json", *argv]) == 0
        cli = json.loads(capsys.readouterr().out)["hits"]
        assert [(h["id"], h["modality"], h["source"], h["rank"]) for h in api["hits"]] == [
            (h["id"], h["modality"], h["source"], h["rank"]) for h in cli
        ]
        np.testing.assert_allclose([h["score"] for h in api["hits"]], [h["score"] for h in cli], atol=1e-5)
        assert api["query_ms"] >= api["search_ms"] >= 0


def test_upload_of_each_modality_finds_itself(world, monkeypatch, tmp_path):
    """Uploading an indexed file retrieves that very item first (score 1): decoding, embedding and search agree."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the server decodes uploads
    client, rec = world["client"], world["records"][3]
    for modality in MODALITIES[1:]:
        r = _upload(client, world["media"] / rec[modality], modality=modality)
        assert r.status_code == 200, r.text
        assert r.json()["modality"] == modality
        hits = _search(client, [{"upload": r.json()["upload"]}], k=3, modalities=[modality])["hits"]
        assert (hits[0]["id"], hits[0]["modality"]) == (rec["id"], modality)
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert list(tmp_path.iterdir()) == []  # every upload's temporary directory is gone


def test_modality_guessed_from_the_file_name(world):
    rec = world["records"][0]
    for modality in ("audio", "video", "image"):
        r = _upload(world["client"], world["media"] / rec[modality])
        assert r.status_code == 200 and r.json()["modality"] == modality, r.text


def test_weighted_sum_is_embedding_arithmetic(world):
    g, client = world["gallery"], world["client"]
    image = world["media"] / world["records"][1]["image"]
    token = _upload(client, image).json()["upload"]
    got = _search(client, [{"text": "a blue cone", "weight": 2.0}, {"upload": token, "weight": 0.5}], k=6)["hits"]
    q = F.normalize(
        2.0 * embed_query(g.model, [("text", "a blue cone")]) + 0.5 * embed_query(g.model, [("image", image)]), dim=-1
    )
    want = g.served[0].index.search(q, 6).hits[0]
    assert [(h["row"], h["rank"]) for h in got] == [(h.row, h.rank) for h in want]
    np.testing.assert_allclose([h["score"] for h in got], [h.score for h in want], atol=1e-5)
    zero = _search(client, [{"text": "a blue cone"}, {"upload": token, "weight": 0.0}], k=6)["hits"]
    alone = _search(client, [{"text": "a blue cone"}], k=6)["hits"]
    assert [h["row"] for h in zero] == [h["row"] for h in alone]


def test_more_like_this_uses_the_stored_embedding(world):
    g, client = world["gallery"], world["client"]
    index = g.served[0].index
    row = index.modalities.index("video") + 2
    hits = _search(client, [{"item": {"index": 0, "row": row}}], k=5)["hits"]
    assert hits[0]["row"] == row and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    want = index.search(index.vectors()[row], 5).hits[0]
    assert [h["row"] for h in hits] == [h.row for h in want]
    # combined with text, as the page does after "more like this" + typing
    assert _search(client, [{"item": {"index": 0, "row": row}}, {"text": "a cold cone"}], k=3)["hits"]
    # an approximate index keeps no exportable vectors: the item's file is embedded again, to the same vector
    hnsw = Index(g.info, kind="hnsw")
    hnsw.add(index.vectors(), index.ids, index.sources, index.modalities)
    approx = TestClient(create_app(Gallery([(world["root"] / "hnsw", hnsw)], g.model, info=g.info)))
    hits = _search(approx, [{"item": {"index": 0, "row": row}}], k=5)["hits"]
    assert hits[0]["row"] == row and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_gallery_modalities_filter_the_full_ranking(world):
    client = world["client"]
    total = N * len(MODALITIES)
    full = _search(client, [{"text": "something warm far away"}], k=total)["hits"]
    for chosen in (["audio"], ["imu", "depth"]):
        got = _search(client, [{"text": "something warm far away"}], k=4, modalities=chosen)["hits"]
        want = [h for h in full if h["modality"] in chosen][:4]
        assert [h["row"] for h in got] == [h["row"] for h in want] and [h["rank"] for h in got] == [1, 2, 3, 4]


def test_previews_of_every_modality(world):
    client, index = world["client"], world["gallery"].served[0].index
    for modality in MODALITIES:
        row = index.modalities.index(modality)
        p = client.get(f"/api/items/0/{row}").json()["preview"]
        assert p["error"] is None, p
        if modality == "text":
            assert p["text"] == index.sources[row] and p["picture"] is None
            continue
        img = client.get(p["picture"])
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        w, h = Image.open(io.BytesIO(img.content)).size
        assert max(w, h) >= 128
        if modality in ("audio", "video"):
            assert p["play"] == modality
            media = client.get(p["media"])
            assert media.status_code == 200 and media.content == Path(index.sources[row]).read_bytes()
            assert media.headers["content-type"].startswith(modality)
            part = client.get(p["media"], headers={"Range": "bytes=0-99"})
            assert part.status_code == 206 and len(part.content) == 100
        else:  # stills are served as previews only, never as the original file
            assert p["media"] is None and client.get(f"/api/items/0/{row}/media").status_code == 404


@pytest.mark.parametrize(
    "name, modality, data, status, words",
    [
        ("broken.wav", "audio", b"RIFF\x00\x00\x00\x00WAVEjunk", 400, ["audio: cannot use 'broken.wav'"]),
        ("broken.png", "image", b"\x89PNG\r\n\x1a\n not really", 400, ["image: cannot use 'broken.png'"]),
        ("empty.wav", "audio", b"", 400, ["empty.wav", "empty"]),
        ("notes.xyz", None, b"hello", 400, ["notes.xyz", "choose one of"]),
        ("a.wav", "smell", b"RIFF", 400, ["no 'smell' encoder"]),
    ],
)
def test_bad_uploads_give_one_readable_line(world, name, modality, data, status, words):
    r = _upload(world["client"], Path(name), modality=modality, data=data)
    assert r.status_code == status
    msg = r.json()["error"]
    assert all(w in msg for w in words), msg
    assert "Traceback" not in r.text and "bind-upload-" not in msg and "\n" not in msg
    assert _search(world["client"], [{"text": "still alive"}], k=1)["hits"]  # the server keeps running


def test_bad_searches_and_limits(world, tmp_path):
    client = world["client"]
    cases = [
        ({"queries": [{"text": "  "}]}, 400, "empty text query"),
        ({"queries": []}, 422, "queries"),
        ({"queries": [{"upload": "nope"}]}, 400, "upload the file again"),
        ({"queries": [{"text": "a", "upload": "b"}]}, 400, "exactly one of"),
        ({"queries": [{"text": "a", "weight": 0}]}, 400, "non-zero weight"),
        ({"queries": [{"text": "a"}], "k": 0}, 422, "k"),
        ({"queries": [{"item": {"index": 3, "row": 0}}]}, 404, "no index 3"),
        ({"queries": [{"item": {"index": 0, "row": 10_000}}]}, 404, "has no row 10000"),
        ({"queries": [{"text": "a"}], "modalities": []}, 400, "no gallery modality"),
        ({"queries": [{"text": "a"}], "modalities": ["smell"]}, 400, "no smell items"),
    ]
    for body, status, words in cases:
        r = client.post("/api/search", json=body)
        assert r.status_code == status and words in r.json()["error"], (body, r.text)
    small = TestClient(
        create_app(
            Gallery(
                [(world["root"] / "idx", world["gallery"].served[0].index)],
                world["gallery"].model,
                max_upload_bytes=1000,
            )
        )
    )
    r = _upload(small, Path("big.wav"), "audio", data=b"RIFF" + bytes(200_000))
    assert r.status_code == 413 and "limit of 1000 bytes" in r.json()["error"]


def test_files_only_by_item_id_no_traversal(world, tmp_path):
    client = world["client"]
    for url in [
        "/api/items/0/../../../etc/passwd",
        "/api/items/0/%2e%2e%2f%2e%2e%2fetc%2fpasswd/media",
        "/api/items/0/%2Fetc%2Fpasswd/media",
        "/api/items/0//etc/passwd",
        "/api/items/0/-1/media",
        "/static/..%2f..%2fapp.py",
        "/static/%2Fetc%2Fpasswd",
        "/static/../app.py",
        "/etc/passwd",
        "/api/items/0/1/media?path=/etc/passwd",
        "/api/items/..%2F..%2Fetc/0/media",
    ]:
        r = client.get(url)
        assert r.status_code in (404, 405, 422), (url, r.status_code)
        assert b"root:" not in r.content


def test_symlinks_pointing_out_of_the_media_directory_are_refused(world, tmp_path):
    """An index whose media directory holds symlinks to a file outside it (a real wav, and /etc/passwd): neither is
    previewed nor served; the genuine files still are."""
    media = tmp_path / "media"
    media.mkdir()
    outside = tmp_path / "outside.wav"
    shutil.copy(world["media"] / world["records"][0]["audio"], outside)
    shutil.copy(world["media"] / world["records"][1]["audio"], media / "real.wav")
    (media / "escape.wav").symlink_to(outside)
    (media / "passwd.png").symlink_to("/etc/passwd")
    (media / "sub").mkdir()
    (media / "sub" / "up.wav").symlink_to("../../outside.wav")
    g = world["gallery"]
    index = Index(g.info)
    sources = [media / "real.wav", media / "escape.wav", media / "sub" / "up.wav"]
    index.add(
        g.model.embed_sources("audio", [str(p) for p in sources]),
        ["real", "escape", "up"],
        [str(p) for p in sources],
        "audio",
    )
    index.add(torch.zeros(1, g.info.embed_dim) + 0.1, ["passwd"], [str(media / "passwd.png")], "image")
    client = TestClient(create_app(Gallery([(tmp_path / "idx", index)], g.model, info=g.info)))
    assert client.get("/api/items/0/0/media").content == (media / "real.wav").read_bytes()
    for row in (1, 2, 3):
        for what in ("media", "preview"):
            r = client.get(f"/api/items/0/{row}/{what}")
            assert r.status_code == 403 and "refused" in r.json()["error"], (row, what, r.text)
            assert b"root:" not in r.content
        assert "refused" in client.get(f"/api/items/0/{row}").json()["preview"]["error"]
    # searching still lists them (they are index rows), with the refusal on the card instead of the file
    hits = _search(client, [{"text": "a sound"}], k=4)["hits"]
    assert {h["row"] for h in hits} == {0, 1, 2, 3}
    # a directory named explicitly (--media-root) is allowed
    opened = TestClient(create_app(Gallery([(tmp_path / "idx", index)], g.model, info=g.info, media_roots=[tmp_path])))
    assert opened.get("/api/items/0/1/media").content == outside.read_bytes()
    assert opened.get("/api/items/0/3/media").status_code == 403  # /etc/passwd stays out


def test_generic_card_and_internal_errors(world, tmp_path):
    """A modality whose plugin has no preview (or is not installed here) gets a generic card; an unexpected failure
    is a one-line 500 and the server keeps answering."""
    g = world["gallery"]
    (tmp_path / "a.smell").write_bytes(b"\x00" * 10)
    index = Index(g.info)
    index.add(torch.randn(1, g.info.embed_dim), ["s1"], [str(tmp_path / "a.smell")], "smell")
    gallery = Gallery([(tmp_path / "idx", index)], g.model, info=g.info)
    client = TestClient(create_app(gallery), raise_server_exceptions=False)
    item = client.get("/api/items/0/0").json()
    assert item["modality"] == "smell" and item["file"] == "a.smell"
    assert item["preview"] == {"picture": None, "play": None, "media": None, "text": None, "error": None}
    assert client.get("/api/items/0/0/media").status_code == 404
    assert client.get("/api/items/0/0/preview").status_code == 404

    def broken(req):
        raise RuntimeError("secret internals\nline two")

    gallery.search = broken
    r = client.post("/api/search", json={"queries": [{"text": "x"}]})
    assert r.status_code == 500
    assert r.json() == {"error": "internal error (RuntimeError); the server log has the details"}
    assert client.get("/api/info").status_code == 200


def test_serve_refuses_indexes_of_different_models(world, tmp_path):
    import bind
    from bind.errors import BindError
    from bind.retrieval.model_info import ModelInfo

    torch.manual_seed(5)
    other = bind.create_model("bind-tiny").eval()
    index = Index(ModelInfo.of(other))
    index.add(torch.randn(2, other.embed_dim), ["a", "b"], ["x", "y"], "image")
    with pytest.raises(BindError, match="different spaces"):
        Gallery(
            [(world["root"] / "idx", world["gallery"].served[0].index), (tmp_path / "other", index)],
            world["gallery"].model,
            info=world["gallery"].info,
        )
