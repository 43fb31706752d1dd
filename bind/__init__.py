"""bind: one embedding space shared by text, image, video, audio, depth, thermal, IMU and plugin modalities.

``bind.Modality`` is the plugin base class (:mod:`bind.modality`); ``bind.list_modalities()`` names the registered ones.

>>> import bind
>>> model = bind.create_model("bind-tiny")
>>> emb = model.embed({"image": images, "text": token_ids})   # {modality: [B, D] unit-norm}
"""

from bind.config import BindConfig, EncoderConfig
from bind.errors import BindError, InputError, MediaError, ModelLoadError, UnknownModalityError
from bind.factory import create_model, expand_config, load_model, register_converter
from bind.modality import Modality
from bind.model import BindModel
from bind.registry import get_modality, list_modalities, list_models, register_modality

__version__ = "0.1.0"


__all__ = [
    "BindConfig",
    "BindError",
    "BindModel",
    "EncoderConfig",
    "InputError",
    "MediaError",
    "Modality",
    "ModelLoadError",
    "UnknownModalityError",
    "create_model",
    "expand_config",
    "get_modality",
    "list_modalities",
    "list_models",
    "load_model",
    "register_converter",
    "register_modality",
]
