"""Converters for published checkpoints (ImageBind, LanguageBind) into bind models.

Importing this package registers the converters named by model configs' ``checkpoint_format``
(``bind.load_model("imagebind-huge", checkpoint=PATH)``); ``bindspace convert ...`` writes converted model directories.
"""

from bind.checkpoints.common import CheckpointError, load_state_dict_file
from bind.checkpoints.imagebind import convert_imagebind, convert_imagebind_state_dict, load_imagebind
from bind.checkpoints.languagebind import convert_languagebind, load_languagebind, load_languagebind_dirs
from bind.factory import register_converter

register_converter("imagebind", load_imagebind)
register_converter("languagebind", load_languagebind)

__all__ = [
    "CheckpointError",
    "convert_imagebind",
    "convert_imagebind_state_dict",
    "convert_languagebind",
    "load_imagebind",
    "load_languagebind",
    "load_languagebind_dirs",
    "load_state_dict_file",
]
