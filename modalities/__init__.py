"""Built-in modality plugins, one file per modality (see :mod:`bind.modality` for the contract)."""
