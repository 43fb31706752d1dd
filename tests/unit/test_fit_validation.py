"""``fit(val_every_n_epochs=N)`` validates after every N-th epoch and once at the end, and trains exactly the same
weights as validating after every epoch (the world demo validates every few epochs to save time)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lightning")


def test_validating_less_often_trains_the_same_weights(tmp_path, fit_tiny_image):
    from bind_world.shapes import write_shapes_dataset
    from lightning.pytorch.callbacks import Callback

    class Validations(Callback):
        def __init__(self):
            self.epochs = []

        def on_validation_epoch_end(self, trainer, module):
            if not trainer.sanity_checking and trainer.state.fn == "fit":
                self.epochs.append(trainer.current_epoch)

    manifest = write_shapes_dataset(tmp_path / "shapes", train=32, val=8, size=32)
    runs = {}
    for every in (1, 2):
        seen = Validations()
        torch.manual_seed(0)
        result = fit_tiny_image(
            manifest, tmp_path / f"every{every}", max_epochs=3, val_every_n_epochs=every, callbacks=[seen]
        )
        runs[every] = (seen.epochs, result)
    assert runs[1][0] == [0, 1, 2] and runs[2][0] == [1]
    for every in (1, 2):  # the fitted model is validated at the end either way
        assert "val/R@1/image->text" in runs[every][1].metrics
    a, b = (runs[e][1].model.state_dict() for e in (1, 2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs[1][1].metrics == runs[2][1].metrics


def test_val_every_n_epochs_must_be_positive(tmp_path, fit_tiny_image):
    with pytest.raises(ValueError, match="val_every_n_epochs must be >= 1"):
        fit_tiny_image(tmp_path / "none.jsonl", tmp_path / "run", val_every_n_epochs=0)
