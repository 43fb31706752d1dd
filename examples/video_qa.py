# bind demo --out runs/demo && python examples/video_qa.py  (defaults: runs/demo/model, runs/demo/world)
"""Video-language question answering with a bind space: multiple choice by embeddings.

For every held-out world video, asks questions whose answers the video reveals — what the object is doing (motion),
what the camera carrier is doing (activity), which object it is (colour + shape) — with every alternative as a
candidate answer. Each candidate becomes a text ("what is the object doing? it is moving left"), and the candidate
whose MiniLM-anchored embedding is closest to the video embedding is the answer (bind.qa.multiple_choice).
Answers are phrased in the world's *paraphrase* vocabulary, never seen in training, so the score measures
understanding through the language anchor, not string matching. Prints accuracy per question against chance.

Any model with video and text encoders works (``--model`` a saved bind model directory); the defaults are what
``bind demo`` writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = {
    "motion": ("what is the object doing?", "it is {}"),
    "activity": ("what is the person holding the camera doing?", "they are {}"),
    "colour": ("what colour is the object?", "it is {}"),
    "shape": ("what object is it?", "it is a {}"),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/demo/model", help="bind model directory (video + text)")
    parser.add_argument("--manifest", default="runs/demo/world/manifest.jsonl", help="world manifest")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=200, help="at most this many videos")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", default=None, help="write the accuracies here")
    args = parser.parse_args(argv)

    import torch

    import bind
    from bind.data.manifest import read_manifest
    from bind.qa import multiple_choice
    from bind.world.captions import PARAPHRASE_PHRASES

    if not os.path.isdir(args.model) or not os.path.isfile(args.manifest):
        sys.exit(f"need a trained model and a world: run `bind demo --out runs/demo` first "
                 f"(looked for {args.model} and {args.manifest})")
    model = bind.load_model(args.model)
    records = [r for r in read_manifest(args.manifest, split=args.split) if r.has("video")][: args.limit]
    results = {}
    for factor, (question, answer) in QUESTIONS.items():
        values = list(PARAPHRASE_PHRASES[factor])
        choices = [answer.format(PARAPHRASE_PHRASES[factor][v][0]) for v in values]
        correct = 0
        for start in range(0, len(records), args.batch):
            chunk = records[start:start + args.batch]
            videos = model.prepare("video", [r.source("video") for r in chunk])
            pred, _ = multiple_choice(model, "video", videos, [question] * len(chunk), [choices] * len(chunk))
            truth = torch.tensor([values.index(r.factors[factor]) for r in chunk])
            correct += int((pred.cpu() == truth).sum())
        acc, chance = correct / max(1, len(records)), 1 / len(values)
        results[factor] = {"question": question, "accuracy": acc, "chance": chance, "ratio": acc / chance,
                           "n": len(records), "choices": choices}
        print(f"{question:<48} accuracy {acc:6.1%}  chance {chance:6.1%}  ({acc / chance:.1f}x, n={len(records)})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
