"""``bindspace serve --index DIR [--index DIR2 ...] [--model M] [--host 127.0.0.1] [--port 8080]``: a local web page
and JSON API to search indexes by text, by file or both (see :mod:`bind.serve.app`)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    """Raise a one-line error when ``host:port`` cannot be listened on (taken, or not an address of this machine)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind(address)
        except OSError as e:
            raise ValueError(
                f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); choose another --port"
            ) from None


def load_gallery(
    index_dirs: list[str],
    model_ref: str | None = None,
    seed: int = 0,
    max_upload_bytes: int | None = None,
    media_roots: list[str] = (),
):
    """Load the indexes and their model (``model_ref`` or the one recorded in the first index; every index must
    come from the same weights)."""
    import torch

    from bind.retrieval.index import Index
    from bind.retrieval.model_info import ModelInfo
    from bind.retrieval.query import load_index_model
    from bind.serve.app import MAX_UPLOAD_BYTES, Gallery

    indexes = [(d, Index.load(d)) for d in index_dirs]
    torch.manual_seed(seed)
    model = load_index_model(indexes[0][1], model_ref)
    info = ModelInfo.of(model, model_ref if model_ref is not None else indexes[0][1].model.path)
    for root in media_roots:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"--media-root {root}: not a directory")
    return Gallery(
        indexes, model, info=info, max_upload_bytes=max_upload_bytes or MAX_UPLOAD_BYTES, media_roots=media_roots
    )


def _serve_cmd(args: argparse.Namespace) -> int:
    import uvicorn

    from bind.serve.app import create_app

    if args.port < 0 or args.port > 65535:
        raise ValueError(f"--port {args.port}: expected 0..65535")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb {args.max_upload_mb}: expected a positive size")
    _check_port(args.host, args.port)  # before the minutes of loading, not after
    gallery = load_gallery(
        args.index, args.model, args.seed, int(args.max_upload_mb * 1024 * 1024), args.media_root or []
    )
    loopback = _is_loopback(args.host)
    if not loopback:
        log.warning(
            "listening on %s: anyone who can reach this address can search these indexes and read the "
            "media they refer to (there is no authentication)",
            args.host,
        )
    gallery.warm()
    app = create_app(gallery, allowed_hosts=LOOPBACK_NAMES + [args.host] if loopback else None)
    sizes = ", ".join(f"{s.name} ({len(s.index)} rows)" for s in gallery.served)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"serving {sizes} with model {gallery.info.name} ({gallery.info.fingerprint}) on "
        f"http://{host}:{args.port}/  (Ctrl-C stops)",
        flush=True,
    )
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="debug" if args.debug else "warning", access_log=args.debug
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web page + JSON API to search indexes by text or by file")
    p.add_argument(
        "--index",
        action="append",
        required=True,
        metavar="DIR",
        help="an index directory (repeatable; every index must come from the same model)",
    )
    p.add_argument("--model", default=None, help="default: the model recorded in the (first) index")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (loopback by default; anything else "
        "exposes the indexed media without authentication)",
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest query file accepted")
    p.add_argument(
        "--media-root",
        action="append",
        metavar="DIR",
        help="serve media whose real path lies in DIR "
        "too (default: only inside the deepest directory holding an index's files; symlinks pointing out "
        "of it are refused)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the random weights of a named config")
    p.add_argument("--debug", action="store_true", help="uvicorn debug logging and access log")
    p.set_defaults(func=_serve_cmd)
