"""Packages of the wheel (the rest of the metadata is in pyproject.toml).

The named model and training configs live in the top-level ``configs/`` directory (the source of truth, edited
there); the wheel carries them as package data of ``bind.configs`` (``configs/`` mapped to that package), where
``bind.registry`` finds them through ``importlib.resources``. A source checkout / editable install reads
``configs/`` itself.
"""

from setuptools import find_packages, setup

CONFIG_PACKAGES = ["bind.configs", "bind.configs.models", "bind.configs.train"]
DATA_PACKAGES = ["bind.serve.static"]  # the web page's files (a directory, not a Python package)

setup(
    packages=[
        *find_packages(include=["bind", "bind.*", "modalities", "modalities.*"]),
        *CONFIG_PACKAGES,
        *DATA_PACKAGES,
    ],
    package_dir={"bind.configs": "configs"},
    package_data={
        "bind": ["py.typed"],
        "bind.serve.static": ["*"],
        "bind.configs.models": ["*.yaml"],
        "bind.configs.train": ["*.yaml"],
    },
)
