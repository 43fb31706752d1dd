"""``bindspace bench compare``: bind side by side with timm, and long video, measured in one run.

1. **Image, same weights**: timm's ``vit_base_patch16_224`` (random init, seeded) is saved as a state dict and loaded
   into a bind ViT-B/16 image encoder through bind's own loader (:func:`bind.init.init_encoder_from_vit`). Reported:
   fp32 max abs difference of the pooled, normalised features (the embedding before the projection), fp32
   throughput of both (timings interleaved, medians), bf16 autocast throughput of both and bf16's cosine to fp32,
   and what ``precision="auto"`` resolves to here. On a CPU without native bf16 (AVX-512-BF16/AMX) bf16 is emulated
   and hundreds of times slower, so the bf16 rows are skipped with the measured matmul rates unless ``--force-bf16``.
   ``--no-vision`` skips this part.
2. **torch.compile** (``--compile``): bind's image encoder compiled (inductor) vs eager, after warm-up.
3. **Video**: a ViT-B/16 video encoder at ``--frames`` (default 8/16/32/64) frames, one clip, in variants
   ``joint`` (full space-time attention), ``divided`` (TimeSformer), and ``+r2`` (tokens of two tubelet steps merged,
   :class:`bind.nn.stems.TubeletStem` ``reduce_time``): seconds per video, tokens, peak memory, ratio to 8 frames.
4. On CUDA with xformers (``--long-cuda``): ViT-L/14 video at 64/128 frames in bf16, xformers vs SDPA.

``--readme README.md`` rewrites the Performance table between ``<!-- bench:compare -->`` markers from the JSON.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from bind.bench.common import (
    PeakMemory,
    environment,
    peak_matmul_flops,
    resolve_device,
    suite_command,
    sync,
    temporal_modality,
    vision_modality,
)

VIDEO_VARIANTS = {
    "joint": {"attention": "joint"},
    "joint+r2": {"attention": "joint", "stem": {"reduce_time": 2}},
    "divided": {"attention": "divided"},
    "divided+r2": {"attention": "divided", "stem": {"reduce_time": 2}},
}
README_START, README_END = "<!-- bench:compare -->", "<!-- /bench:compare -->"


def interleaved_times(fns: dict[str, Any], device: torch.device, iters: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved (A B A B ...) so load drifts hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def bind_image_from_timm(timm_model: torch.nn.Module, workdir: Path, backend: str = "sdpa"):
    """A bind image encoder holding ``timm_model``'s weights, loaded from a saved state dict by bind's loader."""
    import safetensors.torch

    import bind
    from bind.factory import expand_config
    from bind.init import init_encoder_from_vit, read_vit_weights, vit_encoder_overrides
    from bind.registry import model_config_dict

    path = workdir / "timm_vit.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
    weights = read_vit_weights(path)
    size = timm_model.patch_embed.img_size[0]
    overrides = {
        **vit_encoder_overrides(weights),
        "attn_backend": backend,
        "embed_dim": weights.width,
        "stem": {"patch_size": timm_model.patch_embed.patch_size[0]},
        "preprocess": {"crop_size": size, "size": size},
    }
    m = vision_modality()
    model = bind.BindModel(expand_config(model_config_dict("bind-base"), [m], overrides), precision="fp32")
    model.eval()  # BindModel.encode applies its precision in eval mode only
    encoder = model.encoder(m)
    with torch.no_grad():
        report = init_encoder_from_vit(encoder, weights)
    return model, encoder, report


def bind_pooled(encoder, x: torch.Tensor) -> torch.Tensor:
    """bind's pooled, normalised features (the head's LayerNorm output, before the projection)."""
    tokens, pad, index = encoder.forward_tokens(x)
    return encoder.head.norm(encoder.head.pooled(tokens, index, pad))


def matmul_rates(device: torch.device) -> dict[str, float]:
    """GFLOP/s of a square matmul in fp32 and bf16 (bf16 at n=256 when emulated, so it stays quick)."""
    from bind.precision import bf16_fast

    fast = bf16_fast(device)
    return {
        "fp32_gflops": peak_matmul_flops(device, torch.float32, n=1024) / 1e9,
        "bf16_gflops": peak_matmul_flops(device, torch.bfloat16, n=1024 if fast else 256, iters=3) / 1e9,
    }


def compare_image(
    batch: int, iters: int, device: torch.device, timm_name: str, force_bf16: bool, use_compile: bool
) -> dict[str, Any]:
    import timm

    from bind.precision import bf16_fast, resolve_precision

    m = vision_modality()
    torch.manual_seed(0)
    timm_model = timm.create_model(timm_name, pretrained=False, num_classes=0).eval().to(device)
    with tempfile.TemporaryDirectory() as tmp:
        model, encoder, report = bind_image_from_timm(timm_model, Path(tmp))
    model.to(device)
    size = timm_model.patch_embed.img_size
    x = torch.randn(batch, 3, *size, device=device)
    out: dict[str, Any] = {
        "timm_model": timm_name,
        "batch": batch,
        "input": list(x.shape),
        "params_m": sum(p.numel() for p in encoder.parameters()) / 1e6,
        "init_report": {"loaded": report.loaded, "adapted": report.adapted, "skipped": report.skipped},
    }
    with torch.inference_mode():
        ref, ours = timm_model(x), bind_pooled(encoder, x)
        out["fp32_max_abs_diff"] = (ref - ours).abs().max().item()
        out["fp32_feature_max_abs"] = ref.abs().max().item()
        t = interleaved_times({"timm": lambda: timm_model(x), "bind": lambda: model.encode(m, x)}, device, iters)
    out["fp32"] = {
        "timm_s": t["timm"],
        "bind_s": t["bind"],
        "timm_samples_per_s": batch / t["timm"],
        "bind_samples_per_s": batch / t["bind"],
        "bind_over_timm_throughput": t["timm"] / t["bind"],
    }
    out["auto_precision"] = resolve_precision("auto", device)
    out["matmul"] = matmul_rates(device)
    if bf16_fast(device) or force_bf16:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16)

        def timm_bf16():
            with autocast:
                return timm_model(x)

        with torch.inference_mode():
            emb32 = model.encode(m, x, precision="fp32")
            emb16 = model.encode(m, x, precision="bf16")
            t = interleaved_times(
                {
                    "bind_fp32": lambda: model.encode(m, x, precision="fp32"),
                    "bind_bf16": lambda: model.encode(m, x, precision="bf16"),
                    "timm_fp32": lambda: timm_model(x),
                    "timm_bf16": timm_bf16,
                },
                device,
                iters,
            )
            timm_cos = F.cosine_similarity(timm_bf16().float(), ref).min().item()
        out["bf16"] = {
            **{f"{k}_s": v for k, v in t.items()},
            "bind_bf16_over_fp32_throughput": t["bind_fp32"] / t["bind_bf16"],
            "timm_bf16_over_fp32_throughput": t["timm_fp32"] / t["timm_bf16"],
            "bind_over_timm_bf16_throughput": t["timm_bf16"] / t["bind_bf16"],
            "bind_min_cosine_to_fp32": F.cosine_similarity(emb16, emb32).min().item(),
            "timm_min_cosine_to_fp32": timm_cos,
            "emulated": not bf16_fast(device),
        }
    else:
        out["bf16"] = {
            "skipped": f"no native bf16 on this {device.type} (AVX-512-BF16 / AMX): emulated bf16 matmul "
            f"{out['matmul']['bf16_gflops']:.2f} vs fp32 {out['matmul']['fp32_gflops']:.0f} "
            "GFLOP/s, so precision='auto' stays fp32 (--force-bf16 measures it anyway)"
        }
    if use_compile:
        eager = lambda: model.encode(m, x, precision="fp32")  # noqa: E731
        compiled = torch.compile(encoder)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
            first = time.perf_counter() - t0
            diff = (compiled(x) - encoder(x)).abs().max().item()
            t = interleaved_times({"eager": eager, "compiled": lambda: compiled(x)}, device, iters)
        out["compile"] = {
            "first_call_s": first,
            "eager_s": t["eager"],
            "compiled_s": t["compiled"],
            "compiled_over_eager_throughput": t["eager"] / t["compiled"],
            "max_abs_diff": diff,
        }
    return out


def video_encoder(
    variant: str,
    image_size: int,
    temporal_patch: int,
    backend: str,
    device: torch.device,
    model_name: str = "bind-base",
):
    import bind
    from bind.factory import expand_config
    from bind.registry import model_config_dict

    v, m = VIDEO_VARIANTS[variant], temporal_modality()
    stem = {"temporal_patch": temporal_patch, **v.get("stem", {})}
    overrides = {
        "attention": v["attention"],
        "attn_backend": backend,
        "stem": stem,
        "preprocess": {"crop_size": image_size, "size": image_size},
    }
    torch.manual_seed(0)
    model = bind.BindModel(expand_config(model_config_dict(model_name), [m], overrides), precision="fp32")
    return model.eval().to(device)


def compare_video(
    frames: list[int],
    variants: list[str],
    image_size: int,
    temporal_patch: int,
    iters: int,
    device: torch.device,
    backend: str = "sdpa",
    precision: str = "fp32",
    model_name: str = "bind-base",
) -> dict[str, Any]:
    """Seconds per video for every variant and frame count; at each frame count the variants take turns
    (``iters`` rounds, median), so a load change on a shared machine hits every variant alike."""
    m = temporal_modality()
    models = {v: video_encoder(v, image_size, temporal_patch, backend, device, model_name) for v in variants}
    rows = []
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model.encode(m, torch.randn(1, 3, frames[0], image_size, image_size, device=device), precision=precision)
        for t in frames:
            x = torch.randn(1, 3, t, image_size, image_size, device=device)
            times: dict[str, list[float]] = {v: [] for v in variants}
            peaks: dict[str, float] = {}
            for _ in range(iters):
                for v, model in models.items():
                    with PeakMemory(device) as mem:
                        sync(device)
                        t0 = time.perf_counter()
                        model.encode(m, x, precision=precision)
                        sync(device)
                        times[v].append(time.perf_counter() - t0)
                    peaks[v] = max(peaks.get(v, 0.0), mem.peak_mib)
            for v, model in models.items():
                shape = model.encoder(m).forward_tokens(x)[0].shape
                rows.append(
                    {
                        "variant": v,
                        "frames": t,
                        "tokens": int(torch.tensor(shape[1:-1]).prod()),
                        "seconds": sorted(times[v])[len(times[v]) // 2],
                        "peak_memory_mib": peaks[v],
                    }
                )
    for r in rows:
        base = next(b for b in rows if b["variant"] == r["variant"] and b["frames"] == frames[0])
        r["time_vs_first"] = r["seconds"] / base["seconds"]
        joint = next((b for b in rows if b["variant"] == "joint" and b["frames"] == r["frames"]), None)
        r["speedup_vs_joint"] = joint["seconds"] / r["seconds"] if joint else None
    return {
        "size": image_size,
        "temporal_patch": temporal_patch,
        "backend": backend,
        "precision": precision,
        "model": model_name,
        "iters": iters,
        "rows": rows,
    }


def long_sequences_cuda(iters: int) -> dict[str, Any]:
    """ViT-L/14 video at 64 and 128 frames, bf16: xformers vs SDPA (CUDA only)."""
    from bind.nn.attention import _xformers_status

    device = torch.device("cuda")
    xops, why = _xformers_status()
    if xops is None:
        return {"skipped": why}
    out = {}
    for backend in ("sdpa", "xformers"):
        res = compare_video([64, 128], ["joint", "divided"], 224, 2, iters, device, backend, "bf16", "bind-large")
        out[backend] = res["rows"]
    return out


def format_markdown(result: dict[str, Any]) -> str:
    """The README's Performance table from a ``bindspace bench compare`` JSON."""
    vision = vision_modality()
    env, img = result["env"], result.get(vision)
    lines = [
        f"Measured by `{result['command']}` on {env['device_name']} ({env['threads']} threads, torch "
        f"{env['torch']}), one run, {env['time'][:10]}.",
        "",
    ]
    if img:
        fp = img["fp32"]
        lines += [
            f"| {vision} encoder, same weights | timm | bind | bind / timm |",
            "|---|---|---|---|",
            f"| fp32 images/s (batch {img['batch']}) | {fp['timm_samples_per_s']:.2f} | "
            f"{fp['bind_samples_per_s']:.2f} | {fp['bind_over_timm_throughput']:.2f}x |",
            f"| fp32 max abs diff of pooled features | | {img['fp32_max_abs_diff']:.1e} | |",
        ]
        bf = img["bf16"]
        if "skipped" in bf:
            lines.append(f"| bf16 | | skipped: {bf['skipped']} | |")
        else:
            lines += [
                f"| bf16 autocast / fp32 throughput | {bf['timm_bf16_over_fp32_throughput']:.2f}x | "
                f"{bf['bind_bf16_over_fp32_throughput']:.2f}x | {bf['bind_over_timm_bf16_throughput']:.2f}x |",
                f"| bf16 min cosine to fp32 | {bf['timm_min_cosine_to_fp32']:.5f} | "
                f"{bf['bind_min_cosine_to_fp32']:.5f} | |",
            ]
        if "compile" in img:
            c = img["compile"]
            lines.append(
                f"| torch.compile / eager throughput | | {c['compiled_over_eager_throughput']:.2f}x "
                f"(first call {c['first_call_s']:.0f} s) | |"
            )
        lines += [
            "",
            f'`precision="auto"` resolves to **{img["auto_precision"]}** here (matmul fp32 '
            f"{img['matmul']['fp32_gflops']:.0f} GFLOP/s, bf16 {img['matmul']['bf16_gflops']:.2f} GFLOP/s).",
            "",
        ]
    temporal = temporal_modality()
    vid = result.get(temporal)
    if vid:
        frames = sorted({r["frames"] for r in vid["rows"]})
        variants = list(dict.fromkeys(r["variant"] for r in vid["rows"]))
        lines += [
            f"{temporal.capitalize()} ViT-B/16, {vid['size']} px, tubelet {vid['temporal_patch']}, batch 1, "
            f"{vid['precision']}: seconds per clip (× the {frames[0]}-frame time)",
            "",
            "| variant | " + " | ".join(f"{f} frames" for f in frames) + " |",
            "|---|" + "---|" * len(frames),
        ]
        for v in variants:
            cells = []
            for f in frames:
                r = next(r for r in vid["rows"] if r["variant"] == v and r["frames"] == f)
                cells.append(f"{r['seconds']:.2f} s ({r['time_vs_first']:.1f}x, {r['tokens']} tok)")
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update_readme(readme: Path, table: str) -> None:
    text = readme.read_text()
    block = f"{README_START}\n{table}\n{README_END}"
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme}: no {README_START} ... {README_END} block to replace")
    readme.write_text(pattern.sub(lambda _: block, text))


def run_compare_bench(
    timm_model: str = "vit_base_patch16_224",
    batch: int = 16,
    iters: int = 5,
    force_bf16: bool = False,
    compile: bool = False,
    vision: bool = True,
    frames: Sequence[int] = (8, 16, 32, 64),
    variants: Sequence[Literal["joint", "joint+r2", "divided", "divided+r2"]] = tuple(VIDEO_VARIANTS),
    size: int = 224,
    temporal_patch: int = 1,
    temporal_iters: int = 3,
    long_cuda: bool = False,
    device: str | None = None,
    readme: str | None = None,
) -> dict[str, Any]:
    """Run the suite and return its JSON-ready result (see the module docstring).

    Args:
        timm_model: the timm ViT whose weights bind loads
        batch: batch of the still-picture comparison
        iters: timed iterations per contender (interleaved)
        force_bf16: measure bf16 even where it is emulated
        compile: also measure torch.compile (inductor) vs eager
        vision: the same-weights comparison with timm (--no-vision: only the sequences)
        frames: frame counts of the temporal encoder (none: skip it)
        variants: attention and token-reduction variants of the temporal encoder
        size: frame side in pixels of the temporal encoder
        temporal_patch: 1: one token group per frame (12,545 tokens at 64 frames); 2: ImageBind's 2-frame tubelets
        temporal_iters: interleaved rounds per frame count (median)
        long_cuda: ViT-L/14 at 64/128 frames in bf16, xformers vs SDPA (CUDA only)
        device: torch device (default: CUDA where there is one, else the CPU)
        readme: rewrite the Performance table in this README
    """
    bad = [f for f in frames if f < 1]
    if bad or size < 16 or batch < 1 or iters < 1 or temporal_iters < 1:
        raise ValueError(
            f"frame counts must be >= 1 (got {list(frames)}), --size >= 16 (one 16-pixel patch; got "
            f"{size}), --batch/--iters/--temporal-iters >= 1"
        )
    dev = resolve_device(device)
    command = "bindspace " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "bindspace bench compare"
    result: dict[str, Any] = {"suite": "compare", "command": command, "env": environment()}
    if vision:
        result[vision_modality()] = compare_image(batch, iters, dev, timm_model, force_bf16, compile)
    if frames:
        result[temporal_modality()] = compare_video(
            list(frames), list(variants), size, temporal_patch, temporal_iters, dev
        )
    if long_cuda and dev.type == "cuda":
        result["long_cuda"] = long_sequences_cuda(temporal_iters)
    if readme:
        update_readme(Path(readme), format_markdown(result))
    return result


def add_suite(sub: argparse._SubParsersAction) -> None:
    suite_command(
        sub,
        "compare",
        run_compare_bench,
        "bind vs timm on the same weights (fp32/bf16/compile) and long sequences (joint / divided / token-reduced)",
        format_markdown,
    )
