# bindspace demo --out runs/demo && python examples/video_qa/generative.py --out runs/video_qa   (~3 min on 2 CPU cores)
# stage 2 (LoRA on the LM):  python examples/video_qa/generative.py --out runs/video_qa --lora-rank 8   (~4.5 min)
# any transformers LM:       python examples/video_qa/generative.py --lm gpt2 --out runs/video_qa-gpt2
# ask about any video too:   python examples/video_qa/generative.py --video clip.mp4 --question "what colour is it?"
"""Generative video QA: a frozen bind video encoder's tokens -> MLP projector -> a causal LM that answers.

Video-LLaVA style. For every world video the frozen bind video encoder's trunk tokens are pooled to one token per
time step plus the CLS token (``--tokens K``: adaptive pooling to K; ``--pooling sequence``: pooling of the whole
space-time sequence; ``--no-cls``) and cached once (the encoder is frozen, so epochs only run the projector and the
LM). A 2-layer GELU MLP (LLaVA-1.5) maps them into the LM's input embeddings ahead of ``question: ... answer:``:

* stage 0 (only without ``--lm``): a small GPT-2 (word-level tokenizer built with ``tokenizers``) is trained on the
  world's training text — the training questions, each after the video (and audio) captions of its scene where
  the projected tokens will go, so it learns to read answers from its context — and saved to ``OUT/lm``
  (``save_pretrained``). It stops once it answers >= 95% of held-out (validation) questions of every type from
  captions (the ceiling for stage 1). ``--lm PATH_OR_HUB_ID`` uses any transformers causal LM instead
  (``AutoModelForCausalLM``; checked before any work);
* stage 1: the projector alone learns (LM and encoder frozen), with Lightning;
* stage 2 (``--lora-rank R``): LoRA adapters on the LM (peft) train along with the projector.

Then greedy ``generate`` answers the held-out (test split) questions — colour, motion, activity and shape of the
object, and (with the audio encoder's tokens of the video's own sound track in the prefix, on by default;
``--no-audio`` drops them) which object is making the sound and how far away it is — scored by exact match (SQuAD
normalisation) per question type against chance (1 / number of values of the factor). Projector
(``projector.safetensors``) and LoRA adapter are saved in ``OUT/qa`` (``bind.qa.PrefixLMForQA.load``).
``--video FILE --question Q`` also answers a question of your own about any video once trained (the video is decoded
before training starts, so an unreadable file fails early).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VIDEO_TYPES, AUDIO_TYPES = ("colour", "motion", "activity", "shape"), ("sound", "distance")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/demo/model", help="bind model directory (video [+ audio] encoders)")
    p.add_argument("--manifest", default="runs/demo/world/manifest.jsonl", help="world manifest (train + test)")
    p.add_argument("--out", default="runs/video_qa", help="output directory (lm/, qa/, results.json)")
    p.add_argument("--lm", default=None, help="transformers causal LM directory or hub id (default: train one)")
    p.add_argument(
        "--audio",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the audio encoder's tokens of the video's sound track, and the sound questions",
    )
    p.add_argument("--tokens", type=int, default=None, help="video: pool to K tokens (default: one per time step)")
    p.add_argument("--audio-tokens", type=int, default=8, help="audio: pool the spectrogram patches to K tokens")
    p.add_argument("--pooling", default="time", choices=["time", "sequence"], help="video token pooling")
    p.add_argument(
        "--cls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prepend the encoder's CLS token to the pooled video tokens",
    )
    p.add_argument("--epochs", type=int, default=10, help="stage 1 epochs (projector)")
    p.add_argument("--lr", type=float, default=2e-3, help="stage 1 learning rate")
    p.add_argument("--lora-rank", type=int, default=0, help="stage 2: LoRA rank on the LM (0: no stage 2)")
    p.add_argument("--lora-epochs", type=int, default=6)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument(
        "--lm-epochs",
        type=int,
        default=16,
        help="stage 0: at most this many epochs (it stops once the LM reads 95%% of answers from captions)",
    )
    p.add_argument("--lm-layers", type=int, default=2)
    p.add_argument("--lm-width", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="at most this many videos per split")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 suits the tiny default models on a shared CPU; raise for a real LM)",
    )
    p.add_argument("--video", default=None, help="after training, answer --question about this video")
    p.add_argument("--question", default=None, help="with --video: the question")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here (always: OUT/results.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # main() may run inside a larger process (tests)


def run(args: argparse.Namespace) -> dict:
    """Stages 0-2 and the evaluation (see the module docstring)."""
    t0 = time.perf_counter()
    import torch
    from bind_world.captions import PHRASES
    from bind_world.qa import caption_qa_accuracy, train_word_lm, world_lm_corpus, world_questions
    from transformers.utils import logging as hf_logging

    import bind
    from bind.data.manifest import read_manifest
    from bind.qa import (
        PrefixLMForQA,
        accuracy_by_type,
        check_questions,
        encode_tokens,
        fit,
        format_accuracy_table,
        load_causal_lm,
        normalize_answer,
    )

    if not Path(args.model).is_dir() or not Path(args.manifest).is_file():
        sys.exit(
            f"need a trained model and a world: run `bindspace demo --out runs/demo` first "
            f"(looked for {args.model} and {args.manifest})"
        )
    if args.video is not None or args.question is not None:
        if args.video is None:
            sys.exit("--question needs --video")
        check_questions([args.question or ""])  # ValueError naming the empty question, before any work
    lm = tokenizer = None
    if args.lm is not None:  # fail on a bad LM before any work
        lm, tokenizer = load_causal_lm(args.lm)
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = bind.load_model(args.model).eval()
    modalities = ["video", "audio"] if args.audio else ["video"]
    types = [*VIDEO_TYPES, *(AUDIO_TYPES if args.audio else ())]
    splits = {
        s: [r for r in read_manifest(args.manifest, split=s) if r.has("video")][: args.limit] for s in ("train", "test")
    }
    questions = {
        "train": world_questions(splits["train"], types, PHRASES, all_questions=True),
        "test": world_questions(splits["test"], types, PHRASES),
    }
    for s, qs in questions.items():
        if not qs:
            sys.exit(f"no {s} questions: {args.manifest} has no {s} videos with world factors")

    # frozen encoder tokens, once per video (audio: the video's own sound track)
    cache: dict[str, dict[str, torch.Tensor]] = {m: {} for m in modalities}
    videos = [(r.id, r.source("video")) for records in splits.values() for r in records]
    if args.video is not None:
        videos.insert(0, ("<asked>", args.video))  # decoded first: an unreadable file fails before training
    for i in range(0, len(videos), 32):
        chunk = videos[i : i + 32]
        for m in modalities:
            pooling = (args.tokens, args.pooling, args.cls) if m == "video" else (args.audio_tokens, "time", False)
            tokens = encode_tokens(model, m, model.prepare(m, [v for _, v in chunk]), *pooling)
            cache[m].update({k: t for (k, _), t in zip(chunk, tokens)})
    token_dims = {m: next(iter(cache[m].values())).shape[-1] for m in modalities}
    n_tokens = {m: next(iter(cache[m].values())).shape[0] for m in modalities}
    t_cache = time.perf_counter()
    print(f"cached {sum(len(c) for c in cache.values())} token sets {n_tokens} in {t_cache - t0:.0f} s")

    reading: dict[str, float] = {}
    if lm is None:  # stage 0: a small LM on the world's training text, until it reads answers from captions
        corpus = world_lm_corpus(splits["train"], questions["train"], modalities, seed=args.seed)
        held = [r for r in read_manifest(args.manifest, split="val") if r.has("video")][:100] or splits["train"][:100]
        held_qs = world_questions(held, types, PHRASES)

        def reads_context(lm: torch.nn.Module, tokenizer) -> bool:
            reading.update(caption_qa_accuracy(lm, tokenizer, held, held_qs, modalities))
            print("  answers read from captions: " + ", ".join(f"{t} {a:.0%}" for t, a in reading.items()))
            return min(reading.values()) >= 0.95

        print(
            f"stage 0: GPT-2 ({args.lm_layers} layers, width {args.lm_width}) on {len(corpus)} world texts, "
            f"at most {args.lm_epochs} epochs"
        )
        train_word_lm(
            corpus,
            out / "lm",
            n_layer=args.lm_layers,
            n_embd=args.lm_width,
            epochs=args.lm_epochs,
            seed=args.seed,
            stop=reads_context,
        )
        lm, tokenizer = load_causal_lm(out / "lm")
        print(f"  {time.perf_counter() - t_cache:.0f} s")
    lm.eval()
    qa = PrefixLMForQA(lm, tokenizer, token_dims)

    def batch_tokens(qs: list) -> dict[str, torch.Tensor]:
        return {m: torch.stack([cache[m][q.id] for q in qs]) for m in modalities}

    def collate(qs: list) -> tuple:
        return batch_tokens(qs), [q.question for q in qs], [q.answer for q in qs]

    def loss_fn(batch: tuple) -> torch.Tensor:
        return qa(*batch)

    def evaluate() -> dict:
        test = questions["test"]
        preds = []
        for i in range(0, len(test), 64):
            chunk = test[i : i + 64]
            preds += qa.generate(batch_tokens(chunk), [q.question for q in chunk])
        correct = [normalize_answer(p) == normalize_answer(q.answer) for p, q in zip(preds, test)]
        chance = {q.qtype: 1 / len(q.choices) for q in test}
        examples = {}
        for q, p in zip(test, preds):
            examples.setdefault(
                q.qtype,
                {"question": q.question, "answer": q.answer, "generated": p, "example": f"{p!r} for {q.answer!r}"},
            )
        return accuracy_by_type([q.qtype for q in test], correct, chance, examples)

    stages, timings = {}, {"cache_s": t_cache - t0}
    plan = [("stage1", "projector only", args.epochs, args.lr)]
    if args.lora_rank:
        plan.append(("stage2", f"projector + LoRA rank {args.lora_rank} on the LM", args.lora_epochs, args.lora_lr))
    for name, what, epochs, lr in plan:
        t = time.perf_counter()
        if name == "stage2":
            qa.use_lora(args.lora_rank)
        print(f"{name}: {what}, {epochs} epochs on {len(questions['train'])} questions")
        fit(
            qa,
            loss_fn,
            questions["train"],
            epochs=epochs,
            lr=lr,
            batch_size=args.batch_size,
            collate=collate,
            seed=args.seed,
        )
        stages[name] = evaluate()
        timings[f"{name}_s"] = time.perf_counter() - t
        print(
            f"exact match on {len(splits['test'])} held-out videos after {name} (greedy generation), "
            f"{timings[f'{name}_s']:.0f} s:"
        )
        print(format_accuracy_table(stages[name], columns=("example",)))
    final = stages[plan[-1][0]]
    qa.save(
        out / "qa",
        bind_model=str(args.model),
        lm=str(args.lm or out / "lm"),
        modalities=modalities,
        tokens=args.tokens,
        audio_tokens=args.audio_tokens,
        pooling=args.pooling,
        keep_cls=args.cls,
    )
    wall = time.perf_counter() - t0
    print(f"saved the projector{' and LoRA adapter' if args.lora_rank else ''} in {out / 'qa'}; {wall:.0f} s in all")
    asked = None
    if args.video is not None:
        asked = {
            "video": str(args.video),
            "question": args.question,
            "answer": qa.generate({m: cache[m]["<asked>"][None] for m in modalities}, [args.question])[0],
        }
        print(f"{args.video}: {args.question}  ->  {asked['answer']}")
    results = {
        "results": final,
        "stages": stages,
        "asked": asked,
        "n_train_questions": len(questions["train"]),
        "n_test_questions": len(questions["test"]),
        "tokens": n_tokens,
        "wall_s": wall,
        **timings,
        "lm_reads_captions": reading,
        "lm": str(args.lm or out / "lm"),
    }
    for path in {out / "results.json", *([Path(args.json)] if args.json else [])}:
        path.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
