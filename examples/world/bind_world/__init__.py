"""A procedural multimodal world: scenes with known latent factors, rendered coherently into image, video, depth,
thermal, audio and IMU, with captions — bind's embedded default data (tiny, offline, deterministic by seed).

Latent factors (uniform and independent per scene, :data:`FACTORS`):

==============  =====================================================  ============================================
factor          values                                                 shows in
==============  =====================================================  ============================================
shape           cube, sphere, cone, torus, cylinder                    image, video, depth (relief + silhouette),
                                                                       thermal (outline), audio (timbre)
colour          red, green, blue, yellow, purple, orange               image, video
motion          static, left, right, up, down, rotating                video
temperature     cold, warm, hot                                        thermal
distance        near, mid, far                                         image (size), depth (metres), audio
                                                                       (loudness, dullness, reverberance)
activity        the camera carrier: still, walking, running, turning   IMU (steps, gyro), video (shake, pan)
==============  =====================================================  ============================================

Captions name what each modality reveals (:data:`REVEALS`): image = shape + colour + distance; video = shape +
colour + motion + activity; audio = shape + distance; depth = shape + distance; thermal = temperature + shape;
IMU = activity. Pairs overlap in some factors only, so emergent retrieval is measurable: audio↔depth share shape
and distance, IMU↔video share the activity, image↔thermal only the shape.
Nuisances keep it from being trivial: backgrounds, panels, lighting, object size/position/orientation, colour
jitter, pitch jitter, room reverb, sensor noise, invalid depth pixels, IMU mounting tilt and biases.

>>> from bind_world import generate
>>> manifest = generate("world/", n=1000, seed=0, workers=2)   # or: bindspace world generate --out world --n 1000

Files per scene (paths relative to ``manifest.jsonl``): ``media/ID.png`` (image), ``media/ID.mp4`` (video + AAC
audio), ``media/ID.wav``, ``media/ID_depth.png`` (uint16 mm), ``media/ID_thermal.png`` (uint8, linear in °C),
``media/ID_imu.npy`` (float32 [6, N] acc m/s² + gyro rad/s), ``media/ID_imu.csv`` and ``media/ID_points.npy`` (the
object's segment of the depth map back-projected into a coloured point cloud, float32 [N, 6] xyz m + rgb; captioned
with shape, colour and distance, :mod:`bind_world.pointcloud`; read by the ``pointcloud`` plugin package);
``world.json`` records the version, seed, vocabularies, caption templates and units.
:func:`bind_world.captions.paraphrase` gives held-out wordings for evaluation.

Applications on this world (not imported here): :mod:`bind_world.experiment` (the runner of language-anchored
training runs on a world, under ``bindspace demo`` and ``bindspace bench video-reduction``), :mod:`bind_world.demo`
and :mod:`bind_world.qa` (world questions and the offline word-level LM of ``examples/video_qa/``).
"""

from bind_world.captions import caption, paraphrase
from bind_world.generator import MANIFEST_KEYS, WORLD_VERSION, generate, read_manifest, render_scene
from bind_world.scene import FACTORS, MODALITIES, REVEALS, Scene, SceneFactors, WorldConfig, sample_scene

__all__ = [
    "FACTORS",
    "MANIFEST_KEYS",
    "MODALITIES",
    "REVEALS",
    "WORLD_VERSION",
    "Scene",
    "SceneFactors",
    "WorldConfig",
    "caption",
    "generate",
    "paraphrase",
    "read_manifest",
    "render_scene",
    "sample_scene",
]
