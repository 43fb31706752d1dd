# bindspace demo --out runs/demo && python examples/video_qa/multiple_choice.py   (~1 min on 2 CPU cores)
# fuse the sound track into questions both media answer:  python examples/video_qa/multiple_choice.py --fuse-audio 0.5
# your own video and question:  python examples/video_qa/multiple_choice.py --video clip.mp4 \
#     --question "what is the dog doing?" --choices "running|sleeping|eating"
"""Zero-shot multiple-choice video QA by embeddings: no training, only the bind space.

For every held-out world video, asks the questions its media answer (:data:`bind_world.qa.QUESTION_TYPES`, built from
the world's factors and :data:`bind_world.scene.REVEALS`): the object's colour, its direction of motion, what the person
holding the camera is doing, which object it is — from the video — and, from the video's own sound track, which
object is making the sound and how far away it is. Every value of the factor is a candidate answer, worded in the
world's *paraphrase* vocabulary (``PARAPHRASE_PHRASES``: "crimson", "drifting leftward", "jogging"), never seen in
training. Each candidate turns the question into a statement ("a video of a crimson object."; ``--template
question`` uses "{question} {choice}" instead), and the statement whose MiniLM-anchored text embedding is closest to
the media embedding is the answer (:func:`bind.qa.multiple_choice_embeddings`). ``--fuse-audio W`` answers the
questions that both the video and its sound reveal (the object's shape) with the fused embedding
``normalize((1 - W) * video + W * audio)``. Prints accuracy per question type against chance (1 / choices).

Any bind model with video, audio and text encoders works (``--model``); the defaults are what ``bindspace demo`` writes.
``--video FILE --question Q --choices "A|B|C"`` answers one question about any video instead (candidates as
"{question} {choice}", with ``--fuse-audio`` on the video's sound track too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from bind_world.qa import QUESTION_TYPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/demo/model", help="bind model directory (video, audio, text)")
    p.add_argument("--manifest", default="runs/demo/world/manifest.jsonl", help="world manifest")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="at most this many videos")
    p.add_argument("--types", default=",".join(QUESTION_TYPES), help="question types, comma separated")
    p.add_argument(
        "--template",
        default="statement",
        choices=["statement", "question"],
        help="candidate text: the question type's statement, or '{question} {choice}'",
    )
    p.add_argument(
        "--fuse-audio",
        type=float,
        default=0.0,
        metavar="W",
        help="audio weight in the fused embedding for questions video and sound both answer (0: off)",
    )
    p.add_argument(
        "--audio-from",
        default="track",
        choices=["track", "file"],
        help="the video's sound track, or the record's audio file",
    )
    p.add_argument("--video", default=None, help="answer --question about this video instead of the world's")
    p.add_argument("--question", default=None, help="with --video: the question")
    p.add_argument("--choices", default=None, help="with --video: candidate answers separated by |")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", default=None, help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0 = time.perf_counter()
    if not 0.0 <= args.fuse_audio <= 1.0:
        sys.exit(f"--fuse-audio must be in [0, 1], got {args.fuse_audio}")
    import torch
    from bind_world.qa import QUESTION_TYPES, world_questions
    from bind_world.scene import REVEALS

    import bind
    from bind.data.manifest import read_manifest
    from bind.qa import accuracy_by_type, format_accuracy_table, fuse_embeddings, multiple_choice_embeddings

    if args.video is not None:
        return ask(args)
    if not Path(args.model).is_dir() or not Path(args.manifest).is_file():
        sys.exit(
            f"need a trained model and a world: run `bindspace demo --out runs/demo` first "
            f"(looked for {args.model} and {args.manifest})"
        )
    model = bind.load_model(args.model).eval()
    records = [r for r in read_manifest(args.manifest, split=args.split) if r.has("video")][: args.limit]
    questions = world_questions(records, args.types.split(","), audio_from=args.audio_from)
    if not questions:
        sys.exit(f"no questions: {args.manifest} has no {args.split!r} videos with world factors")

    def medium(qtype: str) -> dict[str, float]:  # modality weights that answer a question type
        qt = QUESTION_TYPES[qtype]
        if qt.modality == "video" and args.fuse_audio > 0 and qt.factor in REVEALS["audio"]:
            return {"video": 1.0 - args.fuse_audio, "audio": args.fuse_audio}
        return {qt.modality: 1.0}

    needed = {m for q in questions for m in medium(q.qtype)}
    emb: dict[str, dict[str, torch.Tensor]] = {m: {} for m in needed}
    for m in sorted(needed):
        items = {q.id: q.sources[m] for q in questions}
        emb[m] = dict(zip(items, model.embed_sources(m, list(items.values()), batch_size=args.batch).cpu()))
    media_emb = torch.stack(
        [fuse_embeddings({m: emb[m][q.id] for m in medium(q.qtype)}, medium(q.qtype)) for q in questions]
    )
    templates = [q.statement if args.template == "statement" else "{question} {choice}" for q in questions]
    pred, _ = multiple_choice_embeddings(
        model, media_emb, [q.question for q in questions], [q.choices for q in questions], templates
    )
    correct = [int(p) == q.label for p, q in zip(pred.tolist(), questions)]
    info = {}
    for q in questions:
        w = medium(q.qtype)
        info.setdefault(
            q.qtype,
            {
                "medium": "+".join(f"{m}{'' if len(w) == 1 else f'({v:g})'}" for m, v in w.items()),
                "question": q.question,
                "choices": list(q.choices),
            },
        )
    results = accuracy_by_type(
        [q.qtype for q in questions], correct, {q.qtype: 1 / len(q.choices) for q in questions}, info
    )
    wall = time.perf_counter() - t0
    print(f"zero-shot multiple choice on {len(records)} {args.split} videos (answers in unseen paraphrase wording):")
    print(format_accuracy_table(results, columns=("medium",)))
    print(f"{wall:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"results": results, "wall_s": wall, "template": args.template, "fuse_audio": args.fuse_audio}, indent=2
            )
        )
    return results


def ask(args: argparse.Namespace) -> dict:
    """One question about one video (``--video``): the candidates ranked by similarity."""

    import bind
    from bind.qa import check_questions, fuse_embeddings, multiple_choice_embeddings

    check_questions([args.question or ""])  # ValueError naming the empty question, before any decoding
    choices = [c.strip() for c in (args.choices or "").split("|") if c.strip()]
    if len(choices) < 2:
        raise ValueError(f"--choices needs at least two answers separated by '|', got {args.choices!r}")
    model = bind.load_model(args.model).eval()
    embs = {"video": model.embed_sources("video", [args.video])}  # MediaError names the file
    if args.fuse_audio > 0:
        embs["audio"] = model.embed_sources("audio", [args.video])
    weights = {"video": 1.0 - args.fuse_audio, "audio": args.fuse_audio} if args.fuse_audio > 0 else {"video": 1.0}
    pred, scores = multiple_choice_embeddings(model, fuse_embeddings(embs, weights), [args.question], [choices])
    ranked = sorted(zip(choices, scores[0].tolist()), key=lambda x: -x[1])
    print(f"{args.question}  ->  {choices[int(pred[0])]}")
    for c, sc in ranked:
        print(f"  {sc:+.3f}  {c}")
    out = {"question": args.question, "answer": choices[int(pred[0])], "scores": dict(ranked)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
