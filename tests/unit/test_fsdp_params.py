"""FSDP shards a training module only if it holds no scalar (0-dim) parameter; bind's files keep scalar logit scales.

``strategy: bind_fsdp`` failed on a GPU with "FSDP doesn't support scalar parameters. Change
model.encoders.audio.logit_scale to a 1D tensor": logit scales (and SigLIP's logit bias) are one-element tensors in
the module now, and scalars in every state dict, so saved, converted and older files load unchanged. FSDP2's
``fully_shard`` runs on the CPU and applies the same rule, so the wrap itself is tested here.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import bind


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_fully_shard_wraps_the_train_module_and_state_dict_keeps_scalars(process_group, loss):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from bind.nn.transformer import Block
    from bind.train.module import BindTrainModule

    torch.manual_seed(0)
    module = BindTrainModule(
        model="bind-minilm-tiny", modalities=["image"], loss=loss, encoders={"image": {"width": 32, "depth": 1}}
    )
    assert not [n for n, p in module.named_parameters() if p.ndim == 0]
    before = {k: v.clone() for k, v in module.state_dict().items() if "logit" in k}
    mesh = init_device_mesh("cpu", (1,))
    for block in [m for m in module.modules() if isinstance(m, Block)]:
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)  # raised "fully_shard doesn't support scalar parameters" before
    after = {k: v.full_tensor() for k, v in module.state_dict().items() if "logit" in k}
    assert set(after) == set(before) and len(after) == (3 if loss == "siglip" else 2)
    for k, v in after.items():
        assert v.shape == () and torch.equal(v, before[k]), k


def test_files_hold_scalar_logit_scales_and_both_shapes_load(tiny_model, tmp_path):
    import copy

    from safetensors.torch import load_file

    tiny_model = copy.deepcopy(tiny_model)  # a shared fixture
    enc = tiny_model.encoder("image")
    with torch.no_grad():
        enc.logit_scale.fill_(2.0)
    out = tiny_model.save_pretrained(tmp_path / "m")
    saved = load_file(str(out / "model.safetensors"))
    scales = [k for k in saved if k.endswith("logit_scale")]
    assert scales and all(saved[k].shape == () for k in scales)
    loaded = bind.load_model(out)
    torch.testing.assert_close(loaded.logit_scale("image"), torch.tensor(2.0).exp())
    assert loaded.logit_scale("image").shape == ()
    one_element = {k: v.reshape(1) if k in scales else v for k, v in tiny_model.state_dict().items()}
    loaded.encoder("image").logit_scale.data.fill_(0.0)
    loaded.load_state_dict(one_element)
    torch.testing.assert_close(loaded.logit_scale("image"), torch.tensor(2.0).exp())


def test_gradient_clipping_by_norm_under_fsdp_goes_through_the_root_module():
    """Lightning refuses clipping by norm under FSDP (the shipped FSDP config clips at 1.0): the root module's
    ``clip_grad_norm_`` does it; any other strategy keeps Lightning's own clipping."""
    from types import SimpleNamespace
    from unittest import mock

    from torch.distributed.fsdp import FullyShardedDataParallel

    from bind.train.module import BindTrainModule

    module = BindTrainModule(
        model="bind-minilm-tiny", modalities=["image"], encoders={"image": {"width": 32, "depth": 1}}
    )
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    root = mock.Mock(spec=FullyShardedDataParallel)
    with mock.patch.object(module, "clip_gradients") as lightning_clip:
        module._trainer = SimpleNamespace(model=root)
        module.configure_gradient_clipping(opt, 1.0, "norm")
        root.clip_grad_norm_.assert_called_once_with(1.0)
        module.configure_gradient_clipping(opt, 0.5, "value")  # by value: FSDP's shards clip alone, Lightning does it
        module._trainer = SimpleNamespace(model=module)  # no FSDP
        module.configure_gradient_clipping(opt, 1.0, "norm")
    assert lightning_clip.call_args_list == [mock.call(opt, 0.5, "value"), mock.call(opt, 1.0, "norm")]
    assert root.clip_grad_norm_.call_count == 1


def test_a_checkpoint_saved_with_scalar_logit_scales_resumes():
    """Optimizer state written while logit scales were 0-dim parameters (AdamW's moments 0-dim too) is reshaped on
    load, so such a run resumes: the step counts stay scalars, nothing else changes."""
    from bind.train.module import BindTrainModule

    module = BindTrainModule(
        model="bind-minilm-tiny", modalities=["image"], loss="siglip", encoders={"image": {"width": 32, "depth": 1}}
    )
    param = module.logit_bias["image"]
    opt = torch.optim.AdamW([param], lr=0.1)
    old = {"step": torch.tensor(3.0), "exp_avg": torch.tensor(0.5), "exp_avg_sq": torch.tensor(0.25)}
    weights = {"step": torch.tensor(3.0), "exp_avg": torch.ones(4, 3)}
    checkpoint = {"optimizer_states": [{"state": {0: dict(old), 1: dict(weights)}, "param_groups": []}]}
    module.on_load_checkpoint(checkpoint)
    state = checkpoint["optimizer_states"][0]["state"]
    assert state[0]["step"].shape == () and state[0]["exp_avg"].shape == (1,) and state[0]["exp_avg_sq"].shape == (1,)
    assert torch.equal(state[1]["exp_avg"], torch.ones(4, 3)) and state[1]["step"].shape == ()
    opt.load_state_dict({"state": {0: state[0]}, "param_groups": opt.state_dict()["param_groups"]})
    param.grad = torch.ones(1)
    opt.step()  # raised "output with shape [] doesn't match the broadcast shape [1]" without the reshape
    assert opt.state[param]["exp_avg"].shape == (1,)


def test_export_at_fit_end_under_fsdp_gathers_the_full_weights(process_group, tmp_path):
    """Under ``strategy: bind_fsdp`` the run trained on a GPU, then failed at its end: exporting deep-copied the
    FSDP-wrapped model ("cannot pickle 'module' object"). The export now gathers the full state dict through the
    strategy and writes a fresh, unwrapped module holding it (FSDP1 wraps on the CPU too)."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from bind.nn.transformer import Block
    from bind.train.module import BindTrainModule

    torch.manual_seed(0)
    module = BindTrainModule(
        model="bind-minilm-tiny",
        modalities=["image"],
        encoders={"image": {"width": 32, "depth": 1}},
        export_dir=str(tmp_path / "export"),
    )
    module.hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"  # what LightningCLI adds
    trained = {k: v.clone() for k, v in module.model.encoder("image").state_dict().items()}
    strategy = FSDPStrategy()
    strategy.model = FullyShardedDataParallel(
        module, auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True, device_id=torch.device("cpu")
    )
    module._trainer = SimpleNamespace(strategy=strategy, is_global_zero=True)
    torch.manual_seed(1)  # the fresh module starts from other weights: the exported ones must be the gathered ones
    module.on_fit_end()
    exported = bind.load_model(tmp_path / "export" / "model").encoder("image").state_dict()
    assert exported.keys() == trained.keys()
    for k, v in trained.items():
        torch.testing.assert_close(exported[k].reshape(v.shape), v, rtol=0, atol=0, msg=k)


def test_a_lazily_loaded_checkpoint_state_loads(tmp_path):
    """Lightning's FSDP strategy resumes from a lazily loaded checkpoint (tensors read on first use): the hook that
    takes scalar logit scales into one-element parameters must read such tensors too (it failed on a GPU resume:
    "'_NotYetLoadedTensor' object has no attribute 'reshape'")."""
    from lightning.fabric.utilities.load import _lazy_load

    from bind.train.module import BindTrainModule

    def build(seed):
        torch.manual_seed(seed)
        return BindTrainModule(
            model="bind-minilm-tiny", modalities=["image"], encoders={"image": {"width": 32, "depth": 1}}
        )

    saved = build(0)
    with torch.no_grad():
        saved.model.encoder("image").logit_scale.fill_(1.5)
    torch.save({"state_dict": saved.state_dict()}, tmp_path / "last.ckpt")
    module = build(1)
    module.load_state_dict(_lazy_load(tmp_path / "last.ckpt")["state_dict"])
    for k, v in saved.state_dict().items():
        assert torch.equal(module.state_dict()[k], v), k
