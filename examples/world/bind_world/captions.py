"""Captions of world scenes: training templates per modality, and held-out paraphrases.

A modality's caption names exactly the factors it reveals (:data:`bind_world.scene.REVEALS`); ``"text"`` names
all of them. :func:`caption` draws from the training templates and phrases; :func:`paraphrase` from a disjoint set
of templates *and* factor wordings ("block" for cube, "crimson" for red, "jogging" for running) that training
captions never use, so retrieval with paraphrased queries measures generalisation through the text anchor rather
than memorised strings (the templated-vs-paraphrased split of CLIP-style prompt evaluations).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from bind_world.scene import DERIVED_MODALITIES, FACTORS, MODALITIES, REVEALS, SceneFactors

CAPTION_MODALITIES = (*MODALITIES, *DERIVED_MODALITIES, "text")

PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {
        "cube": ("cube",),
        "sphere": ("sphere",),
        "cone": ("cone",),
        "torus": ("torus",),
        "cylinder": ("cylinder",),
    },
    "colour": {c: (c,) for c in FACTORS["colour"]},
    "distance": {
        "near": ("close to the camera", "nearby"),
        "mid": ("at a medium distance", "a few metres away"),
        "far": ("far away", "in the distance"),
    },
    "motion": {
        "static": ("staying in place", "not moving"),
        "left": ("moving left", "moving to the left"),
        "right": ("moving right", "moving to the right"),
        "up": ("moving up", "moving upwards"),
        "down": ("moving down", "moving downwards"),
        "rotating": ("rotating", "spinning"),
    },
    "temperature": {t: (t,) for t in FACTORS["temperature"]},
    "activity": {
        "still": ("standing still",),
        "walking": ("walking",),
        "running": ("running",),
        "turning": ("turning around",),
    },
}

PARAPHRASE_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {
        "cube": ("block", "box"),
        "sphere": ("ball", "globe"),
        "cone": ("conical object", "traffic-cone shape"),
        "torus": ("ring", "doughnut shape"),
        "cylinder": ("tube", "pillar"),
    },
    "colour": {
        "red": ("crimson", "scarlet"),
        "green": ("emerald", "grass-green"),
        "blue": ("azure", "cobalt"),
        "yellow": ("golden", "lemon-coloured"),
        "purple": ("violet", "lilac"),
        "orange": ("tangerine", "amber"),
    },
    "distance": {
        "near": ("right in front of the lens", "within arm's reach"),
        "mid": ("at middle range", "not too far off"),
        "far": ("way off in the background", "a long way from the viewer"),
    },
    "motion": {
        "static": ("holding its position", "motionless"),
        "left": ("drifting leftward", "sliding toward the left edge"),
        "right": ("drifting rightward", "sliding toward the right edge"),
        "up": ("rising", "floating upward"),
        "down": ("sinking", "dropping lower"),
        "rotating": ("twirling around its centre", "revolving in place"),
    },
    "temperature": {
        "cold": ("icy", "freezing"),
        "warm": ("lukewarm", "mildly heated"),
        "hot": ("scorching", "searing"),
    },
    "activity": {
        "still": ("keeping perfectly still", "waiting in one spot"),
        "walking": ("strolling", "taking a walk"),
        "running": ("jogging", "sprinting"),
        "turning": ("pivoting on the spot", "changing direction"),
    },
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "image": (
        "a photo of a {colour} {shape} {distance}.",
        "an image of a {colour} {shape}, {distance}.",
        "a {colour} {shape} {distance}.",
        "a picture showing a {colour} {shape} {distance}.",
    ),
    "video": (
        "a video of a {colour} {shape} {motion}, filmed by someone {activity}.",
        "a {colour} {shape} {motion} while the camera operator is {activity}.",
        "footage of a {colour} {shape} {motion}, recorded while {activity}.",
    ),
    "audio": (
        "the sound of a {shape} {distance}.",
        "audio of a {shape}, {distance}.",
        "a recording of a {shape} {distance}.",
    ),
    "depth": (
        "a depth map of a {shape} {distance}.",
        "a depth image of a {shape}, {distance}.",
        "a {shape} {distance}, seen by a depth sensor.",
    ),
    "thermal": (
        "a thermal image of a {temperature} {shape}.",
        "an infrared picture of a {temperature} {shape}.",
        "a {temperature} {shape} seen by a thermal camera.",
    ),
    "imu": (
        "motion sensor readings of a person {activity}.",
        "IMU data recorded while {activity}.",
        "accelerometer and gyroscope signals of someone {activity}.",
    ),
    "pointcloud": (
        "a point cloud of a {colour} {shape} {distance}.",
        "a 3D scan of a {colour} {shape}, {distance}.",
        "a {colour} {shape} {distance}, seen as a point cloud.",
    ),
    "text": (
        "a {temperature} {colour} {shape} {distance}, {motion}, filmed by someone {activity}.",
        "a {colour} {shape} that is {temperature}, {distance} and {motion}, recorded while {activity}.",
    ),
}

PARAPHRASE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "image": (
        "there is a {colour} {shape} {distance} in this snapshot.",
        "this picture contains a {colour} {shape} {distance}.",
    ),
    "video": (
        "a clip where a {colour} {shape} is {motion} and the person holding the camera is {activity}.",
        "someone {activity} records a {colour} {shape} {motion}.",
    ),
    "audio": ("listen to a {shape} {distance}.", "this is what a {shape} sounds like {distance}."),
    "depth": ("a range scan showing a {shape} {distance}.", "distance measurements of a {shape} {distance}."),
    "thermal": ("a heat map showing a {temperature} {shape}.", "the infrared signature of a {temperature} {shape}."),
    "imu": ("inertial measurements from a wearer {activity}.", "body-worn sensor traces of someone {activity}."),
    "pointcloud": (
        "a cloud of 3D points showing a {colour} {shape} {distance}.",
        "scanned surface points of a {colour} {shape} {distance}.",
    ),
    "text": (
        "there is a {colour} {shape} {distance}; it is {temperature} and {motion}, and the camera holder is "
        "{activity}.",
    ),
}

_ARTICLE = re.compile(r"\b([Aa])( [aeiouAEIOU])")


def _values(factors: SceneFactors | Mapping[str, str]) -> dict[str, str]:
    values = factors.as_dict() if isinstance(factors, SceneFactors) else dict(factors)
    SceneFactors(**values)  # validates names and values
    return values


def revealed(modality: str) -> tuple[str, ...]:
    """Factors named by ``modality``'s captions (all of them for ``"text"``)."""
    if modality == "text":
        return tuple(FACTORS)
    if modality not in REVEALS:
        raise ValueError(f"no captions for modality {modality!r}; expected one of {CAPTION_MODALITIES}")
    return REVEALS[modality]


def _render(
    factors: SceneFactors | Mapping[str, str],
    modality: str,
    rng: np.random.Generator | None,
    templates: Mapping[str, tuple[str, ...]],
    phrases: Mapping[str, Mapping[str, tuple[str, ...]]],
) -> str:
    values = _values(factors)
    names = revealed(modality)

    def pick(options: tuple[str, ...]) -> str:
        return options[0] if rng is None else options[int(rng.integers(len(options)))]

    template = pick(templates[modality])
    text = template.format(**{name: pick(phrases[name][values[name]]) for name in names})
    return _ARTICLE.sub(r"\1n\2", text)


def caption(
    factors: SceneFactors | Mapping[str, str], modality: str = "text", rng: np.random.Generator | None = None
) -> str:
    """A training caption of ``modality`` (``"text"``: every factor); ``rng=None`` gives the canonical one."""
    return _render(factors, modality, rng, TEMPLATES, PHRASES)


def paraphrase(
    factors: SceneFactors | Mapping[str, str], modality: str = "text", rng: np.random.Generator | None = None
) -> str:
    """A held-out caption: templates and wordings that :func:`caption` never produces."""
    return _render(factors, modality, rng, PARAPHRASE_TEMPLATES, PARAPHRASE_PHRASES)


def caption_spec() -> dict:
    """Templates and phrase vocabularies (recorded in ``world.json``)."""
    return {
        "reveals": {m: list(revealed(m)) for m in CAPTION_MODALITIES},
        "templates": {k: list(v) for k, v in TEMPLATES.items()},
        "phrases": {f: {k: list(v) for k, v in d.items()} for f, d in PHRASES.items()},
        "paraphrase_templates": {k: list(v) for k, v in PARAPHRASE_TEMPLATES.items()},
        "paraphrase_phrases": {f: {k: list(v) for k, v in d.items()} for f, d in PARAPHRASE_PHRASES.items()},
    }
