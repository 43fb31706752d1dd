"""``bindspace serve`` as a user meets it: the real server started as a subprocess on a world index built by the CLI,
driven in Debian's headless Chromium through Playwright. Type a query and see k cards whose media loaded, upload a
wav and get audio results, "more like this", a readable error for a corrupt upload, and CLI errors.

Chromium comes from the Debian packages (``make setup`` / ``make test`` install it when missing); without it the test
is skipped, except under CI, where it fails."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MODALITIES = ["text", "image", "video", "audio", "depth", "thermal", "imu"]
K = 7


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {
        **os.environ,
        "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        "BIND_PRECISION": "fp32",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def _bind(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bind", *argv], capture_output=True, text=True, env=_env(), timeout=timeout
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A world of 24 scenes, a tiny saved model, an index of every modality, and `bindspace serve` on it."""
    import torch

    import bind

    root = tmp_path_factory.mktemp("serve_browser")
    r = _bind("world", "generate", "--out", str(root / "world"), "--n", "24", "--workers", "2")
    assert r.returncode == 0, r.stderr
    torch.manual_seed(0)
    bind.create_model("bind-tiny").save_pretrained(root / "model")
    r = _bind(
        "index",
        "build",
        "--model",
        str(root / "model"),
        "--modality",
        *MODALITIES,
        "--manifest",
        str(root / "world" / "manifest.jsonl"),
        "--out",
        str(root / "idx"),
        "-q",
    )
    assert r.returncode == 0, r.stderr
    port = _free_port()
    log = open(root / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bind", "serve", "--index", str(root / "idx"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/info", timeout=2) as resp:
                    info = json.load(resp)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"bindspace serve did not start: {log.read()}")
                time.sleep(0.3)
        records = [json.loads(line) for line in (root / "world" / "manifest.jsonl").read_text().splitlines()]
        yield {"url": url, "root": root, "info": info, "records": records, "proc": proc, "log": root / "serve.log"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} missing: `make setup` installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _wait_cards(page, count: int) -> None:
    """Wait until ``count`` result cards have their previews and every image / audio / video element has loaded."""
    page.wait_for_function(
        f"() => document.querySelectorAll('#results .card').length === {count} && "
        "[...document.querySelectorAll('#results .card')].every(c => c.dataset.preview)"
    )
    page.wait_for_function(
        """() => [...document.querySelectorAll('#results img')].every(i => i.complete) &&
        [...document.querySelectorAll('#results audio, #results video')].every(m => m.readyState >= 1 || m.error)""",
        timeout=30_000,
    )


def _media_state(page) -> dict:
    return page.evaluate("""() => ({
        cards: [...document.querySelectorAll('#results .card')].map(c => ({modality: c.dataset.modality,
            row: Number(c.dataset.row), preview: c.dataset.preview, id: c.querySelector('.id').textContent})),
        images: [...document.querySelectorAll('#results img')].map(i => i.naturalWidth),
        media: [...document.querySelectorAll('#results audio, #results video')].map(m => ({tag: m.tagName,
            ready: m.readyState, duration: m.duration, error: m.error && m.error.code})),
        error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent,
        status: document.getElementById('status').textContent})""")


def test_page_search_upload_more_like_this_and_errors(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console_errors: list[str] = []
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(server["url"])
    page.wait_for_selector("body[data-ready='1']")
    assert server["info"]["model"]["fingerprint"] in page.inner_text("#model")
    assert "168 items" in page.inner_text("#indexes")

    # 1. a text query over the media modalities: k cards, every image decoded, every audio / video has metadata
    page.uncheck("input[name=gallery][value=text]")
    page.fill("#k", str(K))
    page.fill("#text", "a red cube close to the camera")
    page.click("#go")
    _wait_cards(page, K)
    s = _media_state(page)
    assert len(s["cards"]) == K and all(c["preview"] == "ready" for c in s["cards"]), s
    assert {c["modality"] for c in s["cards"]} <= set(MODALITIES) - {"text"}
    assert len(s["images"]) >= K - sum(c["modality"] == "video" for c in s["cards"]) and all(w > 0 for w in s["images"])
    assert all(m["ready"] >= 1 and m["error"] is None and m["duration"] > 0 for m in s["media"]), s["media"]
    assert "query" in s["status"] and "ms" in s["status"]
    if os.environ.get("BIND_SERVE_SCREENSHOT"):
        page.screenshot(path=os.environ["BIND_SERVE_SCREENSHOT"], full_page=True)
    # ... and with the gallery narrowed to one modality at a time, every kind of preview loads
    for only in ("image", "video", "audio", "imu"):
        for box in page.locator("input[name=gallery]").all():
            box.set_checked(box.get_attribute("value") == only)
        page.click("#go")
        page.wait_for_function(
            f"() => document.querySelectorAll('#results .card').length === {K} && "
            f"[...document.querySelectorAll('#results .card')].every(c => c.dataset.modality "
            f"=== '{only}')"
        )
        _wait_cards(page, K)
        s = _media_state(page)
        assert all(c["preview"] == "ready" for c in s["cards"]), s
        assert len(s["images"]) == (0 if only == "video" else K) and all(w > 0 for w in s["images"]), s
        assert len(s["media"]) == (K if only in ("audio", "video") else 0), s
        assert all(m["ready"] >= 1 and m["error"] is None and m["duration"] > 0 for m in s["media"]), s["media"]
        if only == "video":  # the poster frame is a real image too
            assert all(page.evaluate("() => [...document.querySelectorAll('#results video')].map(v => v.poster)"))

    # 2. upload a wav: audio results, the uploaded clip itself first
    rec = server["records"][5]
    page.fill("#text", "")
    for box in page.locator("input[name=gallery]").all():
        box.check()
    page.set_input_files("#files", str(server["root"] / "world" / rec["audio"]))
    page.wait_for_selector("#parts li")
    assert "audio: " in page.inner_text("#parts")
    page.click("#go")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('results')")
    _wait_cards(page, K)
    s = _media_state(page)
    assert s["cards"][0]["modality"] == "audio" and s["cards"][0]["id"].startswith(rec["id"]), s["cards"]
    assert page.locator("#results .card .score").first.inner_text() == "1.0000"
    audio_cards = [c for c in s["cards"] if c["modality"] == "audio"]
    assert len(audio_cards) >= 1 and len([m for m in s["media"] if m["tag"] == "AUDIO"]) == len(audio_cards)
    assert all(m["ready"] >= 1 for m in s["media"]), s["media"]

    # 3. "more like this" on the third card: that item comes back first, by its stored embedding
    third = s["cards"][2]
    page.locator("#results .card button.more").nth(2).click()
    page.wait_for_function(
        f"() => document.querySelector('#results .card') && "
        f"document.querySelector('#results .card').dataset.row === '{third['row']}' && "
        f"document.querySelector('#parts').textContent.includes('like')"
    )
    _wait_cards(page, K)
    s = _media_state(page)
    assert s["cards"][0]["row"] == third["row"] and s["cards"][0]["modality"] == third["modality"]
    assert page.locator("#results .card .score").first.inner_text() == "1.0000"

    # 4. a corrupt upload: the MediaError text on the page, no traceback, and the server keeps answering
    page.set_input_files(
        "#files",
        files=[{"name": "broken.wav", "mimeType": "audio/wav", "buffer": b"RIFF\x24\x00\x00\x00WAVEfmt garbage"}],
    )
    page.wait_for_selector("#error:not([hidden])")
    error = page.inner_text("#error")
    assert "audio: cannot use 'broken.wav'" in error and "Traceback" not in error, error
    page.fill("#text", "a blue sphere")
    page.click("#go")
    page.wait_for_function("() => document.getElementById('error').hidden")
    _wait_cards(page, K)
    assert server["proc"].poll() is None
    assert not console_errors, console_errors
    page.close()


def test_serve_bad_arguments_one_line(tmp_path, server):
    r = _bind("serve", "--index", str(tmp_path / "nowhere"), "--port", "0", timeout=120)
    assert r.returncode == 1 and "nowhere" in r.stderr and "index" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    port = server["url"].rsplit(":", 1)[1]  # taken by the running server
    r = _bind("serve", "--index", str(server["root"] / "idx"), "--port", port, timeout=120)
    assert r.returncode == 1 and f"--port {port}: cannot listen" in r.stderr and "in use" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
