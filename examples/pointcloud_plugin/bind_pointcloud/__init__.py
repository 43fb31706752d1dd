"""bind-pointcloud: point clouds as a bind modality, installed as its own package (the worked example of binding a
new modality from outside bind; nothing under ``bind/`` names it).

bind finds it through the entry-point group ``bind.modalities`` (this package's ``pyproject.toml``); importing it
registers the ``pointcloud`` plugin and this package's named model configs (``configs/models/*.yaml``, e.g.
``pointbert-minilm-tiny``) with :func:`bind.registry.add_model_config_dir`.
"""

from pathlib import Path

from bind.registry import add_model_config_dir
from bind_pointcloud.io import PointCloud, read_point_cloud
from bind_pointcloud.modality import PointCloudModality, PointCloudPreprocess, PointCloudStemConfig, PointGroupStem

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "models"
add_model_config_dir(CONFIG_DIR)  # runs once: Python imports a module once

__all__ = [
    "CONFIG_DIR",
    "PointCloud",
    "PointCloudModality",
    "PointCloudPreprocess",
    "PointCloudStemConfig",
    "PointGroupStem",
    "read_point_cloud",
]
