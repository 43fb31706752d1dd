"""Transfer a bound space to a classification task in any modality, from zero labels to a few per class.

Zero-shot prompt ensembles, a linear probe, prompt learning (CoOp, CoCoOp) through the frozen text tower's
input-embedding path, and feature adapters (CLIP-Adapter, Tip-Adapter, Tip-Adapter-F), all on frozen embeddings of
any modality (see :mod:`bind.transfer.methods` for the papers). ``bindspace transfer`` drives it from the CLI::

    task = load_task(model, "imu", "world/manifest.jsonl", label_field="factors.activity")
    head = make_head("coop", TextSide(model, "imu"), task.classnames, model.embed_dim).fit(task.few_shot(16))
    save_head(head, "runs/imu-coop", model)          # kilobytes: safetensors + JSON
    head = load_head("runs/imu-coop", model)
    head.predict_logits(task.test.features)          # [N, C]; head.class_embeddings(): query embeddings
"""

from bind.transfer.bench import SHOTS, base_to_new, format_table, plot_curve, shots_curve
from bind.transfer.data import LabelledFeatures, TransferError, TransferTask, load_task
from bind.transfer.methods import (
    METHODS,
    CLIPAdapter,
    CoCoOp,
    CoOp,
    LinearProbe,
    TextSide,
    TipAdapter,
    TransferHead,
    ZeroShot,
    make_head,
    zeroshot_templates,
)
from bind.transfer.store import load_head, save_head

__all__ = [
    "METHODS",
    "SHOTS",
    "CLIPAdapter",
    "CoCoOp",
    "CoOp",
    "LabelledFeatures",
    "LinearProbe",
    "TextSide",
    "TipAdapter",
    "TransferError",
    "TransferHead",
    "TransferTask",
    "ZeroShot",
    "base_to_new",
    "format_table",
    "load_head",
    "load_task",
    "make_head",
    "plot_curve",
    "save_head",
    "shots_curve",
    "zeroshot_templates",
]
