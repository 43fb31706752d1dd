"""bind: one embedding space shared by text, image, video, audio, depth, thermal and IMU.

>>> import bind
>>> model = bind.create_model("bind-tiny")
>>> emb = model.embed({"image": images, "text": token_ids})   # {modality: [B, D] unit-norm}
"""

from bind.config import BindConfig, EncoderConfig
from bind.errors import BindError, InputError, MediaError, ModelLoadError, UnknownModalityError
from bind.factory import create_model, expand_config, load_model, register_converter
from bind.model import BindModel
from bind.registry import get_modality, list_modalities, list_models, register_modality

__version__ = "0.1.0"


class Modality:
    """Names of the built-in modalities."""

    TEXT, IMAGE, VIDEO, AUDIO, DEPTH, THERMAL, IMU = "text", "image", "video", "audio", "depth", "thermal", "imu"


__all__ = [
    "BindConfig", "BindError", "BindModel", "EncoderConfig", "InputError", "MediaError", "Modality", "ModelLoadError",
    "UnknownModalityError", "create_model", "expand_config", "get_modality", "list_modalities", "list_models",
    "load_model", "register_converter", "register_modality",
]
