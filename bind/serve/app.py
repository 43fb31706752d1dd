"""The web page and JSON API of ``bindspace serve`` (FastAPI; run by uvicorn from :mod:`bind.serve.cli`).

Search goes through the library: queries are embedded with :func:`bind.retrieval.query.embed_query` and searched with
:meth:`bind.retrieval.index.Index.search`, so one text or file query gives exactly the hits of ``bindspace search``.
Several query parts combine as ImageBind's embedding arithmetic (weighted sum of unit-norm embeddings, re-normalised).

API (JSON; a failure is ``{"error": "<one line>"}`` with a 4xx/5xx status, never a traceback):

* ``GET /api/info`` — model (name, path, weight fingerprint, dim), indexes (name, size, modalities), the modalities
  a query can have, the upload limit.
* ``POST /api/uploads[?modality=M]`` — multipart field ``file``; decoded and embedded in a temporary directory that is
  deleted at once -> ``{"upload": token, "modality", "name", "embed_ms"}``. The modality is guessed from the file
  name when not given. A file that does not decode -> 400 with the :class:`bind.errors.MediaError` text.
* ``POST /api/search`` — ``{"queries": [{"text": "a dog", "weight": 1.0}, {"upload": token}, {"item": {"index": 0,
  "row": 5}}], "k": 10, "modalities": ["image", "audio"] | null, "indexes": [0] | null}`` -> ``{"hits": [{"rank",
  "score", "id", "modality", "source", "index", "row", "file", "caption"}], "embed_ms", "search_ms", "query_ms"}``.
  An ``item`` part ("more like this") uses the embedding stored in the index.
* ``GET /api/items/{index}/{row}`` — one entry with its ``preview``: ``{"picture": url, "play": "audio"|"video",
  "media": url, "text", "error"}`` (from the modality plugin's :meth:`bind.modality.Modality.preview`).
* ``GET /api/items/{index}/{row}/preview`` — the preview picture; ``GET /api/items/{index}/{row}/media`` — the original
  file, for inline playback.

Files are addressed by (index, row) only, never by a path from the request; a file is served only when the index
refers to it, its real path (symlinks resolved) lies inside the directory holding that index's media, and its plugin
decoded it.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from bind.errors import BindError, MediaError
from bind.registry import get_modality
from bind.retrieval.index import Hit, Index
from bind.retrieval.model_info import ModelInfo
from bind.retrieval.query import embed_query

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'",
}


class Refused(BindError):
    """A request for a file the server must not serve."""


@dataclass
class Served:
    """One index being served: where it lives, the directory its media must stay inside, captions by item id."""

    name: str
    path: Path
    index: Index
    media_root: Path | None
    captions: dict[str, str] = field(default_factory=dict)
    vectors: torch.Tensor | None = None


def _media_root(index: Index) -> Path | None:
    """The deepest directory holding every file the index refers to (real path), None when it refers to none."""
    dirs = {os.path.dirname(os.path.abspath(s)) for s in index.sources if s and os.path.isfile(s)}
    return Path(os.path.realpath(os.path.commonpath(sorted(dirs)))) if dirs else None


def _captions(index: Index) -> dict[str, str]:
    """First inline (non-file) text source of each id: the caption of an item indexed with its text."""
    caps: dict[str, str] = {}
    for i, s in zip(index.ids, index.sources):
        if i not in caps and s and not s.startswith("<") and not os.path.lexists(s):
            caps[i] = s
    return caps


def guess_modality(filename: str, modalities: list[str]) -> str | None:
    """The modality of an uploaded file: a plugin declaring its suffix in ``extensions``, else the MIME type's major
    part when it names a modality (``audio/x-wav`` -> ``audio``); None when neither tells."""
    suffix = Path(filename).suffix.lower()
    owners = [m for m in modalities if suffix in {e.lower() for e in getattr(get_modality(m), "extensions", ())}]
    if len(owners) == 1:
        return owners[0]
    major = (mimetypes.guess_type(filename)[0] or "").split("/")[0]
    return major if major in modalities else None


class ItemRef(BaseModel):
    index: int = Field(ge=0)
    row: int = Field(ge=0)


class QueryPart(BaseModel):
    text: str | None = Field(None, max_length=10_000)
    upload: str | None = None
    item: ItemRef | None = None
    weight: float = 1.0


class SearchRequest(BaseModel):
    queries: list[QueryPart] = Field(min_length=1, max_length=16)
    k: int = Field(10, ge=1, le=1000)
    modalities: list[str] | None = None
    indexes: list[int] | None = None


class Gallery:
    """Indexes of one model, the model, uploaded query embeddings and a preview cache; thread-safe."""

    def __init__(
        self,
        indexes: list[tuple[str | Path, Index]],
        model,
        model_ref: str | Path | None = None,
        *,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        info: ModelInfo | None = None,
        media_roots: list[str | Path] = (),
    ) -> None:
        if not indexes:
            raise BindError("no index to serve: give --index DIR")
        self.model = model.eval()
        self.info = info or ModelInfo.of(model, model_ref)
        self.served: list[Served] = []
        names = [Path(p).name or str(p) for p, _ in indexes]
        for (path, index), name in zip(indexes, names):
            index.model.check_compatible(self.info, what=f"queries (for index {path})")
            self.served.append(
                Served(
                    name if names.count(name) == 1 else str(path),
                    Path(path),
                    index,
                    _media_root(index),
                    _captions(index),
                )
            )
        self.max_upload_bytes = max_upload_bytes
        #: further directories media may resolve into (e.g. the blob store a directory of symlinks points at)
        self.media_roots = [Path(os.path.realpath(r)) for r in media_roots]
        self.lock = threading.Lock()  # the model and faiss indexes: one query at a time
        self.preview_lock = threading.Lock()
        self.uploads: OrderedDict[str, tuple[str, str, torch.Tensor]] = OrderedDict()
        self.previews: OrderedDict[tuple[int, int], dict[str, Any]] = OrderedDict()

    def warm(self) -> None:
        """Pay the first query's one-off costs (tokenizer, lazy initialisation) before the first visitor does."""
        with self.lock:
            if "text" in self.model.modalities:
                embed_query(self.model, [("text", "warm up")])

    # --- description ------------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "model": self.info.to_dict(),
            "query_modalities": list(self.model.modalities),
            "indexes": [
                {
                    "index": n,
                    "name": s.name,
                    "path": str(s.path),
                    "size": len(s.index),
                    "kind": f"{s.index.spec.backend}/{s.index.spec.kind}",
                    "modalities": s.index.modality_counts(),
                }
                for n, s in enumerate(self.served)
            ],
            "gallery_modalities": sorted({m for s in self.served for m in s.index.modality_counts()}),
            "max_upload_bytes": self.max_upload_bytes,
        }

    def _served(self, n: int, row: int | None = None) -> Served:
        if not 0 <= n < len(self.served):
            raise HTTPException(404, f"no index {n} (serving {len(self.served)})")
        s = self.served[n]
        if row is not None and not 0 <= row < len(s.index):
            raise HTTPException(404, f"index {n} ({s.name}) has no row {row} ({len(s.index)} rows)")
        return s

    def item(self, n: int, row: int) -> dict[str, Any]:
        s = self._served(n, row)
        e = s.index.entry(row)
        is_file = os.path.isfile(e["source"])
        caption = s.captions.get(e["id"]) if is_file else None
        return {
            **e,
            "index": n,
            "row": row,
            "file": os.path.basename(e["source"]) if is_file else None,
            "caption": caption,
        }

    # --- files ------------------------------------------------------------------------------------------------------
    def file(self, n: int, row: int) -> Path | None:
        """The real path of row ``row``'s file; None when its source is not a file (inline text). Raises
        :class:`Refused` when the file lies outside the index's media directory (a symlink pointing out)."""
        s = self._served(n, row)
        source = s.index.sources[row]
        if not source or not os.path.lexists(source):
            return None
        real = Path(os.path.realpath(source))
        roots = ([s.media_root] if s.media_root is not None else []) + self.media_roots
        if not any(real.is_relative_to(r) for r in roots) or not real.is_file():
            raise Refused(
                f"refused: item {n}/{row} ({s.index.ids[row]}) resolves outside the media directory of "
                f"index {s.name} (bindspace serve --media-root DIR allows another directory)"
            )
        return real

    def preview(self, n: int, row: int) -> dict[str, Any]:
        """The plugin's preview of a row (cached): ``{"picture": bytes, "play", "text"}``, ``{"error": msg}`` or {}."""
        with self.preview_lock:
            if (n, row) in self.previews:
                self.previews.move_to_end((n, row))
                return self.previews[(n, row)]
            s = self._served(n, row)
            modality = s.index.modalities[row]
            try:
                path = self.file(n, row)
                plugin = get_modality(modality)
                cfg = (
                    self.model.preprocess_config(modality)
                    if modality in self.model.modalities
                    else plugin.preprocess_config()
                )
                result = plugin.preview(path if path is not None else s.index.sources[row], cfg) or {}
            except (Refused, MediaError) as e:
                result = {"error": str(e)}
            except KeyError:  # a modality whose plugin is not installed here: a generic card
                result = {}
            except Exception as e:  # noqa: BLE001 - a preview must never break a page; logged with its traceback
                log.exception("preview of item %d/%d failed", n, row)
                result = {"error": f"no preview: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            self.previews[(n, row)] = result
            while len(self.previews) > 4096:
                self.previews.popitem(last=False)
            return result

    def preview_description(self, n: int, row: int) -> dict[str, Any]:
        p = self.preview(n, row)
        base = f"/api/items/{n}/{row}"
        return {
            "picture": f"{base}/preview" if p.get("picture") else None,
            "play": p.get("play"),
            "media": f"{base}/media" if p.get("play") else None,
            "text": p.get("text"),
            "error": p.get("error"),
        }

    # --- queries ----------------------------------------------------------------------------------------------------
    def add_upload(self, data_path: Path, name: str, modality: str) -> dict[str, Any]:
        if modality not in self.model.modalities:
            raise BindError(f"{name}: the model has no {modality!r} encoder; it embeds {list(self.model.modalities)}")
        start = time.perf_counter()
        with self.lock:
            try:
                emb = embed_query(self.model, [(modality, data_path)])
            except MediaError as e:  # name the uploaded file, not the temporary copy
                reason = e.reason.replace(str(data_path), name).replace(str(data_path.parent), "<upload>")
                raise MediaError(name, modality, reason) from None
            token = secrets.token_urlsafe(12)
            self.uploads[token] = (modality, name, emb)
            while len(self.uploads) > 256:
                self.uploads.popitem(last=False)
        return {
            "upload": token,
            "modality": modality,
            "name": name,
            "embed_ms": round((time.perf_counter() - start) * 1000, 2),
        }

    def stored_vector(self, n: int, row: int) -> torch.Tensor:
        """The embedding of a row as stored in its index (exact indexes); approximate ones are re-embedded."""
        s = self._served(n, row)
        if s.index.spec.kind == "flat":
            if s.vectors is None:
                s.vectors = s.index.vectors()
            return s.vectors[row]
        path = self.file(n, row)
        return embed_query(self.model, [(s.index.modalities[row], path if path is not None else s.index.sources[row])])

    def query_embedding(self, parts: list[QueryPart]) -> torch.Tensor:
        """Weighted sum of the parts' unit-norm embeddings, re-normalised (as :func:`embed_query` combines)."""
        total = torch.zeros(self.info.embed_dim)
        for p in parts:
            given = [x for x in (p.text, p.upload, p.item) if x is not None]
            if len(given) != 1:
                raise BindError('each query part needs exactly one of "text", "upload" or "item"')
            if not (p.weight == p.weight and abs(p.weight) < 1e6):
                raise BindError(f"query weight {p.weight} is not a finite number")
            if p.text is not None:
                if not p.text.strip():
                    raise BindError("empty text query: type something to search for")
                e = embed_query(self.model, [("text", p.text)])
            elif p.upload is not None:
                if p.upload not in self.uploads:
                    raise BindError("unknown or expired upload: upload the file again")
                e = self.uploads[p.upload][2]
            else:
                e = self.stored_vector(p.item.index, p.item.row)
            total += p.weight * e.float()
        if total.norm() < 1e-12:
            raise BindError("the weighted query is zero: give at least one part a non-zero weight")
        return F.normalize(total, dim=-1)

    def search(self, req: SearchRequest) -> dict[str, Any]:
        targets = req.indexes if req.indexes is not None else list(range(len(self.served)))
        for n in targets:
            self._served(n)
        wanted = set(req.modalities) if req.modalities is not None else None
        if wanted is not None:
            known = {m for s in self.served for m in s.index.modality_counts()}
            if not wanted:
                raise BindError("no gallery modality chosen: tick at least one of " + ", ".join(sorted(known)))
            if wanted - known:
                raise BindError(
                    f"no {', '.join(sorted(wanted - known))} items in the served indexes; they hold "
                    + ", ".join(sorted(known))
                )
        with self.lock:
            t0 = time.perf_counter()
            q = self.query_embedding(req.queries)
            t1 = time.perf_counter()
            found: list[tuple[int, Hit]] = []
            for n in targets:
                found += [(n, h) for h in _search_index(self.served[n].index, q, req.k, wanted)]
            t2 = time.perf_counter()
        found.sort(key=lambda nh: -nh[1].score)
        hits = []
        for rank, (n, h) in enumerate(found[: req.k], 1):
            hits.append({**self.item(n, h.row), "rank": rank, "score": h.score})
        return {
            "hits": hits,
            "k": req.k,
            "embed_ms": round((t1 - t0) * 1000, 2),
            "search_ms": round((t2 - t1) * 1000, 2),
            "query_ms": round((t2 - t0) * 1000, 2),
        }


def _search_index(index: Index, q: torch.Tensor, k: int, wanted: set[str] | None) -> list[Hit]:
    """Top-``k`` hits of ``index``, only of the ``wanted`` modalities: asks the index for more rows until ``k`` of
    them are found or the index is exhausted."""
    if len(index) == 0:
        return []
    ask = min(k, len(index))
    while True:
        hits = index.search(q, ask).hits[0]
        kept = [h for h in hits if wanted is None or h.modality in wanted]
        if len(kept) >= k or ask >= len(index):
            return kept[:k]
        ask = min(len(index), ask * 4)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=_HEADERS)


def create_app(gallery: Gallery, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The FastAPI application over ``gallery``. ``allowed_hosts`` (Host header names) guards a loopback server
    against DNS rebinding; None accepts any."""
    app = FastAPI(
        title="bind", summary="search indexes of any modality by text or by file", docs_url=None, redoc_url=None
    )
    app.state.gallery = gallery
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def limits_and_headers(request: Request, call_next):
        if request.method == "POST" and request.url.path == "/api/uploads":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return _error(411, "uploads need a Content-Length")
            if int(length) > gallery.max_upload_bytes + 64 * 1024:
                return _error(
                    413,
                    f"upload of {int(length)} bytes is over the limit of {gallery.max_upload_bytes} "
                    "bytes (bindspace serve --max-upload-mb)",
                )
        response = await call_next(request)
        for k, v in _HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(422, f"bad request: {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return _error(403, str(exc))

    @app.exception_handler(BindError)
    async def bind_error(request: Request, exc: BindError):
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        files = {"app.js": "text/javascript", "app.css": "text/css"}
        if name not in files:
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=files[name])

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return gallery.describe()

    @app.post("/api/uploads")
    def upload(file: Annotated[UploadFile, File()], modality: Annotated[str | None, Query()] = None) -> dict[str, Any]:
        name = os.path.basename(file.filename or "upload")[:200] or "upload"
        modality = modality or guess_modality(name, list(gallery.model.modalities))
        if modality is None:
            raise BindError(
                f"{name}: cannot tell its modality from the name; choose one of {list(gallery.model.modalities)}"
            )
        suffix = Path(name).suffix if _SUFFIX.match(Path(name).suffix) else ""
        with tempfile.TemporaryDirectory(prefix="bind-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            size = 0
            with open(path, "wb") as f:
                while chunk := file.file.read(1 << 20):
                    size += len(chunk)
                    if size > gallery.max_upload_bytes:
                        return _error(413, f"{name}: over the upload limit of {gallery.max_upload_bytes} bytes")
                    f.write(chunk)
            if size == 0:
                raise BindError(f"{name}: the uploaded file is empty")
            return gallery.add_upload(path, name, modality)

    @app.post("/api/search")
    def search(req: SearchRequest) -> dict[str, Any]:
        return gallery.search(req)

    @app.get("/api/items/{n}/{row}")
    def item(n: int, row: int) -> dict[str, Any]:
        return {**gallery.item(n, row), "preview": gallery.preview_description(n, row)}

    @app.get("/api/items/{n}/{row}/preview")
    def preview(n: int, row: int) -> Response:
        p = gallery.preview(n, row)
        if p.get("error", "").startswith("refused"):
            raise Refused(p["error"])
        if not p.get("picture"):
            raise HTTPException(404, p.get("error") or f"item {n}/{row} has no preview picture")
        return Response(
            p["picture"],
            media_type=p.get("picture_mime", mimetypes.types_map[".png"]),
            headers={"Cache-Control": "private, max-age=3600"},
        )

    @app.get("/api/items/{n}/{row}/media")
    def media(n: int, row: int) -> FileResponse:
        path = gallery.file(n, row)
        if path is None:
            raise HTTPException(404, f"item {n}/{row} is not a file")
        p = gallery.preview(n, row)
        if not p.get("play"):  # only what its plugin decoded and asks to play: never an arbitrary file
            raise HTTPException(404, p.get("error") or f"item {n}/{row} has no playable media")
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    return app
