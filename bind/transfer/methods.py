"""Few-shot transfer heads over frozen embeddings of any modality, all scored against the frozen text tower.

* **Zero-shot** (Radford et al. 2021, CLIP §3.1.4): prompt-template ensembles, :mod:`bind.retrieval.zeroshot`.
* **Linear probe** (CLIP's evaluation, §3.2): L2-regularised logistic regression on frozen embeddings (L-BFGS), the
  inverse regularisation ``C`` chosen on a validation split; by default regularised towards the zero-shot classifier
  (CLAP / LP++) instead of towards zero.
* **CoOp** (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022): ``M`` learnable context vectors
  ``[V]_1 ... [V]_M [CLASS].`` fed through the frozen text tower as input embeddings, unified (shared) or
  class-specific, initialised from a phrase or at random; cross-entropy over ``logit_scale * cos(input, class)``.
* **CoCoOp** (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022): a meta-net
  (Linear-ReLU-Linear, bottleneck ``D/16``) maps each input embedding to a token added to every context vector.
* **CLIP-Adapter** (Gao et al. 2021): a residual bottleneck MLP on the input embedding, mixed with ratio ``alpha``.
* **Tip-Adapter** (Zhang et al., ECCV 2022): a training-free cache of the few-shot embeddings (keys) and one-hot
  labels (values); ``logits = s * f W^T + alpha * exp(-beta (1 - f K^T)) V``. **Tip-Adapter-F** fine-tunes the keys.

Every head maps unit-norm input embeddings ``[N, D]`` to logits ``[N, C]``; only its own small parameters train
(the text tower and the modality encoder stay frozen, their weights bit-identical). Heads save to safetensors + JSON
(:mod:`bind.transfer.store`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bind.transfer.data import LabelledFeatures, TransferError

TEMPLATE_INIT = "template"  #: CoOp / CoCoOp ``ctx_init``: start from the modality's first zero-shot template


def zeroshot_templates(modality: str) -> list[str]:
    """The plugin's ``zeroshot_templates`` when it declares them, else :func:`bind.retrieval.zeroshot.templates_for`."""
    from bind.registry import get_modality
    from bind.retrieval.zeroshot import templates_for

    own = getattr(get_modality(modality), "zeroshot_templates", None)
    return list(own) if own else list(templates_for(modality))


class TextSide:
    """The frozen text tower of a model and a modality's logit scale: what every head scores against."""

    def __init__(self, model, modality: str, text_modality: str = "text") -> None:
        from bind.registry import get_modality

        self.model, self.modality, self.text_modality = model, modality, text_modality
        self.encoder = model.encoder(text_modality)
        self.plugin = get_modality(text_modality)
        self.preprocess = model.preprocess_config(text_modality)
        self.scale = float(model.logit_scale(modality).detach())

    @torch.no_grad()
    def zeroshot_weights(self, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        from bind.retrieval.zeroshot import build_classifier

        return build_classifier(self.model, classnames, templates, modality=self.text_modality).weights.float()

    def prompt_tokens(self, texts: Sequence[str], n_slots: int):
        if not hasattr(self.plugin, "prompt_tokens") or not hasattr(self.encoder, "encode_text_embeddings"):
            raise TransferError(
                f"the {self.text_modality!r} plugin/encoder takes no input embeddings "
                "(prompt_tokens / encode_text_embeddings): prompt learning is not available"
            )
        return self.plugin.prompt_tokens(list(texts), self.preprocess, n_slots)

    def phrase_embeddings(self, phrase: str) -> torch.Tensor:
        """Token embeddings ``[M, W]`` of ``phrase`` (its tokens between the special tokens): CoOp's phrase init."""
        pt = self.prompt_tokens([phrase], 0)
        n = int(pt.attention_mask[0].sum()) - pt.start - 1  # minus the end-of-text token
        ids = pt.ids[0, pt.start : pt.start + n]
        with torch.no_grad():
            return self.encoder.input_embeddings()(ids).float().clone()


class _Frozen:
    """Context manager: every parameter of ``modules`` with ``requires_grad`` False, restored on exit; eval mode."""

    def __init__(self, *modules: nn.Module) -> None:
        self.params = [p for m in modules for p in m.parameters()]
        self.modules = modules

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.params]
        self.modes = [m.training for m in self.modules]
        for p in self.params:
            p.requires_grad_(False)
        for m in self.modules:
            m.eval()
        return self

    def __exit__(self, *exc) -> None:
        for p, f in zip(self.params, self.flags):
            p.requires_grad_(f)
        for m, t in zip(self.modules, self.modes):
            m.train(t)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


def check_schedule(rates: Sequence[float], steps: int | None) -> None:
    """Learning rates > 0 and steps >= 1 (None: not given), or a :class:`TransferError` (a negative rate trained to
    garbage silently)."""
    if min(rates, default=1.0) <= 0 or (steps is not None and steps < 1):
        got = ", ".join(map(str, sorted(set(rates)))) or "default"
        raise TransferError(
            f"learning rates must be > 0 and steps >= 1; got lr {got}, steps {'default' if steps is None else steps} "
            "(--lr / --meta-lr / --steps)"
        )


def _optimise(params: list, loss_fn, steps: int, lr: float, weight_decay: float = 0.0) -> list[float]:
    """AdamW with a cosine schedule (warm-up free) for ``steps`` full steps of ``loss_fn(step)``; returns the losses.
    ``params``: parameters, or AdamW parameter groups (dicts) for per-group learning rates."""
    check_schedule([g.get("lr", lr) if isinstance(g, dict) else lr for g in params], steps)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(step)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


class TransferHead(nn.Module):
    """Base of the heads: ``classnames``, ``modality``, JSON ``config()``; ``fit(train, val)``, ``logits(x)``."""

    method: ClassVar[str]
    #: needs the text tower at prediction time (prompt learning), so loading needs the model
    needs_text_tower: ClassVar[bool] = False
    #: can score classes never seen in fitting (a new class name is enough)
    open_vocabulary: ClassVar[bool] = False
    #: the attributes :meth:`config` records (what the head's constructor takes back)
    config_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, text: TextSide | None, classnames: Sequence[str], scale: float | None = None) -> None:
        super().__init__()
        self.text = text
        self.classnames = list(classnames)
        if len(self.classnames) < 2:
            raise TransferError(f"classification needs at least two classes, got {self.classnames}")
        self.modality = text.modality if text is not None else ""
        self.register_buffer("scale", torch.tensor(float(scale if scale is not None else text.scale)))

    def config(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.config_fields}

    def fit(self, train: LabelledFeatures, val: LabelledFeatures | None = None) -> TransferHead:
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Eval-mode logits ``[N, C]`` in batches."""
        self.eval()
        if not len(x):
            return torch.zeros(0, len(self.classnames))
        with _Frozen(self.text.encoder) if self.needs_text_tower else contextlib.nullcontext():
            return torch.cat([self.logits(x[i : i + batch_size].float()) for i in range(0, len(x), batch_size)])

    def class_embeddings(self) -> torch.Tensor:
        """Unit-norm ``[C, D]`` class vectors usable as query embeddings (search) or zero-shot classifier weights."""
        raise TransferError(
            f"{self.method} adapts the input embeddings; it has no class query embeddings "
            "(use zeroshot, linear-probe, coop or cocoop)"
        )

    def zeroshot_classifier(self):
        """The class embeddings as a :class:`bind.retrieval.zeroshot.ZeroShotClassifier` (learned prompts in place of
        hand-written templates), for :func:`bind.retrieval.zeroshot.evaluate_zeroshot` and friends."""
        from bind.retrieval.zeroshot import ZeroShotClassifier

        return ZeroShotClassifier(self.class_embeddings().float(), list(self.classnames))

    def with_classes(self, classnames: Sequence[str]) -> TransferHead:
        """The head scoring other class names (open-vocabulary heads only: CoCoOp's base-to-new protocol)."""
        raise TransferError(f"{self.method} is tied to the classes it was fitted on; it cannot score new classes")

    def _check(self, data: LabelledFeatures) -> None:
        present = set(data.labels.tolist())
        if len(present) < 2:
            raise TransferError(f"{self.method}: the fitting data holds {len(present)} class; need at least two")


# --- zero-shot -------------------------------------------------------------------------------------------------------
class ZeroShot(TransferHead):
    """``logit_scale * cos(x, w_c)`` with ``w_c`` the template ensemble of class ``c``."""

    method = "zeroshot"
    open_vocabulary = True
    config_fields = ("templates",)

    def __init__(
        self,
        text: TextSide | None,
        classnames: Sequence[str],
        templates: Sequence[str] | None = None,
        weights: torch.Tensor | None = None,
        scale: float | None = None,
    ) -> None:
        super().__init__(text, classnames, scale)
        self.templates = list(templates or zeroshot_templates(text.modality))
        if weights is None:
            weights = text.zeroshot_weights(self.classnames, self.templates)
        self.register_buffer("weights", weights.float().clone())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x @ self.weights.T

    def class_embeddings(self) -> torch.Tensor:
        return self.weights

    def with_classes(self, classnames: Sequence[str]) -> ZeroShot:
        if self.text is None:
            raise TransferError("scoring new class names needs the model's text tower")
        self.classnames = list(classnames)
        self.weights = self.text.zeroshot_weights(self.classnames, self.templates)
        return self


# --- linear probe ----------------------------------------------------------------------------------------------------
class LinearProbe(TransferHead):
    """Multinomial logistic regression on frozen embeddings, L2-regularised towards a prior ``W0``:
    ``mean CE(x (W0 + D)^T + b, y) + |D|^2 / (2 C n)`` (L-BFGS), ``C`` from ``c_grid`` by validation accuracy (ties:
    the stronger regularisation), then refitted with it.

    ``prior="zeroshot"`` (the default when the text tower is there) centres the penalty on the zero-shot classifier
    (``logit_scale`` times the template ensembles), as CLAP (Silva-Rodríguez et al., CVPR 2024) and LP++ (Huang et
    al., CVPR 2024) do: strong regularisation gives back zero-shot, weak gives a plain probe, and validation picks
    between — so few shots cannot pull the probe below what the text already knows. ``prior=None`` is CLIP's own
    probe (penalty towards zero; scikit-learn's objective)."""

    method = "linear-probe"
    open_vocabulary = False
    config_fields = ("C", "c_grid", "prior")

    def __init__(
        self,
        text: TextSide | None,
        classnames: Sequence[str],
        dim: int,
        c_grid: Sequence[float] = tuple(10.0**e for e in range(-3, 5)),
        max_iter: int = 200,
        prior: str | None = "zeroshot",
        templates: Sequence[str] | None = None,
        weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(text, classnames, scale=1.0)
        if prior not in (None, "zeroshot"):
            raise TransferError(f"linear probe prior {prior!r}; expected 'zeroshot' or None")
        if prior == "zeroshot" and text is None and weights is None:
            prior = None  # loaded without a text tower: the fitted weights already hold the prior
        self.c_grid, self.max_iter, self.prior, self.C = list(c_grid), max_iter, prior, None
        self.linear = nn.Linear(dim, len(self.classnames))
        w0 = torch.zeros(len(self.classnames), dim)
        if prior == "zeroshot":
            zs = (
                weights
                if weights is not None
                else text.zeroshot_weights(self.classnames, templates or zeroshot_templates(text.modality))
            )
            w0 = (text.scale if text is not None else 1.0) * zs.float()
        self.register_buffer("prior_weight", w0, persistent=False)

    def _solve(self, data: LabelledFeatures, c: float) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = data.features.double(), data.labels
        w0 = self.prior_weight.double()
        delta = torch.zeros_like(w0, requires_grad=True)
        bias = torch.zeros(w0.shape[0], dtype=torch.float64, requires_grad=True)
        present = torch.zeros(w0.shape[0], dtype=torch.bool)
        present[y.unique()] = True
        mask = torch.where(present, 0.0, -1e4).double()  # a class absent from the shots only has its prior
        opt = torch.optim.LBFGS([delta, bias], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = x @ (w0 + delta * present[:, None]).T + bias * present
            if self.prior is None:
                logits = logits + mask
            loss = F.cross_entropy(logits, y) + (delta * present[:, None]).pow(2).sum() / (2 * c * len(y))
            loss.backward()
            return loss

        opt.step(closure)
        w = (w0 + delta.detach() * present[:, None]).float()
        b = (bias.detach() * present + (mask if self.prior is None else 0)).float()
        return w, b

    def fit(self, train: LabelledFeatures, val: LabelledFeatures | None = None) -> LinearProbe:
        self._check(train)
        best = (-1.0, self.c_grid[0])
        if val is not None and len(val) and len(self.c_grid) > 1:
            for c in self.c_grid:
                w, b = self._solve(train, c)
                acc = float(((val.features.float() @ w.T + b).argmax(-1) == val.labels).float().mean())
                if acc > best[0] + 1e-9:
                    best = (acc, c)
        self.C = best[1]
        w, b = self._solve(train, self.C)
        with torch.no_grad():
            self.linear.weight.copy_(w)
            self.linear.bias.copy_(b)
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def class_embeddings(self) -> torch.Tensor:
        return F.normalize(self.linear.weight.detach(), dim=-1)


# --- CoOp / CoCoOp ---------------------------------------------------------------------------------------------------
class CoOp(TransferHead):
    """Learnable prompt context ``[V]_1..[V]_M`` before each class name, through the frozen text tower.

    ``ctx_init``: ``"template"`` (default) starts the context at the modality's first zero-shot template up to its
    class slot ("a video of a"; CoOp's "a photo of a"), so training starts from a hand-written prompt (video ->
    motion at 16 shots: 0.465 vs 0.406 from random, zero-shot 0.412); a phrase of your own (``n_ctx`` becomes its
    token count either way); or ``"random"`` / None for N(0, 0.02²) vectors. ``class_specific``: one context per
    class (``[C, M, W]``) instead of one shared (``[M, W]``)."""

    method = "coop"
    needs_text_tower = True
    open_vocabulary = True
    config_fields = ("n_ctx", "ctx_init", "class_specific", "steps", "lr", "seed")

    def __init__(
        self,
        text: TextSide,
        classnames: Sequence[str],
        n_ctx: int = 4,
        ctx_init: str | None = TEMPLATE_INIT,
        class_specific: bool = False,
        steps: int = 100,
        lr: float = 2e-3,
        seed: int = 0,
    ) -> None:
        super().__init__(text, classnames)
        width = text.encoder.input_embeddings().embedding_dim
        g = torch.Generator().manual_seed(seed)
        if ctx_init == TEMPLATE_INIT:
            ctx_init = zeroshot_templates(text.modality)[0].split("{}")[0].strip() or None
        if ctx_init and ctx_init != "random":
            init = text.phrase_embeddings(ctx_init)
            if len(init) == 0:
                raise TransferError(f"--ctx-init {ctx_init!r} has no tokens")
            n_ctx = len(init)
        else:
            if n_ctx < 1:
                raise TransferError(f"n_ctx must be >= 1, got {n_ctx}")
            init = torch.randn(n_ctx, width, generator=g) * 0.02
        if class_specific:
            init = init[None].repeat(len(self.classnames), 1, 1)
        self.ctx = nn.Parameter(init.clone())
        self.n_ctx, self.ctx_init, self.class_specific = (
            n_ctx,
            ctx_init if ctx_init != "random" else None,
            class_specific,
        )
        self.steps, self.lr, self.seed = steps, lr, seed
        self._set_classes(self.classnames)

    def _set_classes(self, classnames: Sequence[str]) -> None:
        """Frozen token embeddings of ``[ctx slots] name.`` for every class (buffers are not saved: rebuilt from the
        text tower)."""
        pt = self.text.prompt_tokens([f"{c}." for c in classnames], self.n_ctx)
        with torch.no_grad():
            emb = self.text.encoder.input_embeddings()(pt.ids).float()
        self.start = pt.start
        self.register_buffer("prefix", emb[:, : pt.start].clone(), persistent=False)
        self.register_buffer("suffix", emb[:, pt.start + self.n_ctx :].clone(), persistent=False)
        self.register_buffer("mask", pt.attention_mask.clone(), persistent=False)

    def _encode(self, ctx: torch.Tensor) -> torch.Tensor:
        """Class embeddings from context ``[..., C, M, W]`` -> ``[..., C, D]``."""
        lead = ctx.shape[:-3]
        c = ctx.shape[-3]
        ctx = ctx.reshape(-1, self.n_ctx, ctx.shape[-1])
        reps = ctx.shape[0] // c
        prefix, suffix = self.prefix.repeat(reps, 1, 1), self.suffix.repeat(reps, 1, 1)
        embeds = torch.cat([prefix, ctx.to(prefix.dtype), suffix], 1)
        out = self.text.encoder.encode_text_embeddings(embeds, self.mask.repeat(reps, 1))
        return out.float().reshape(*lead, c, -1)

    def _context(self) -> torch.Tensor:
        c = len(self.classnames)
        return self.ctx if self.class_specific else self.ctx[None].expand(c, -1, -1)

    def class_embeddings(self) -> torch.Tensor:
        with torch.no_grad(), _Frozen(self.text.encoder):
            return self._encode(self._context())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x @ self._encode(self._context()).T

    def fit(self, train: LabelledFeatures, val: LabelledFeatures | None = None) -> CoOp:
        self._check(train)
        torch.manual_seed(self.seed)
        with _Frozen(self.text.encoder):
            self.train()
            _optimise(
                [self.ctx], lambda _: F.cross_entropy(self.logits(train.features), train.labels), self.steps, self.lr
            )
        return self.eval()

    def with_classes(self, classnames: Sequence[str]) -> CoOp:
        """The same learned context prompting other class names (unified context only): CoOp on new classes."""
        if self.class_specific:
            raise TransferError("class-specific context exists only for the classes it was learned on")
        self.classnames = list(classnames)
        self._set_classes(self.classnames)
        return self


class CoCoOp(CoOp):
    """CoOp plus a meta-net ``pi(x)`` (Linear-ReLU-Linear) added to every context vector, per input.

    ``pi``'s output layer starts at zero, so the untrained head is CoOp's (the paper's default init adds the output
    bias, a random input-independent vector several times a token embedding's norm, to every context vector: the
    prompt starts buried and a few steps cannot dig it out). Mini-batches of ``batch_size`` for ``epochs`` passes over
    the shots (the paper: 10 epochs), so the number of steps grows with the shots; ``steps`` fixes it instead.

    ``meta_lr`` (default 5e-4, a quarter of the context's default ``lr``): AdamW moves every weight by about the
    learning rate per step whatever its gradient, so at the context's ``lr`` the meta-net's token outgrows a
    correction within the 60 steps of 16 shots and fits the base classes' inputs. On video -> motion base-to-new,
    new-class accuracy fell below zero-shot on 2 of 6 draws (0.553, 0.557 vs 0.582; H 0.556); at ``meta_lr = 5e-4``
    H is 0.588 (CoOp 0.570)."""

    method = "cocoop"
    config_fields = (*CoOp.config_fields, "batch_size", "epochs", "meta_lr")

    def __init__(
        self,
        text: TextSide,
        classnames: Sequence[str],
        dim: int,
        n_ctx: int = 4,
        ctx_init: str | None = TEMPLATE_INIT,
        steps: int | None = None,
        lr: float = 2e-3,
        batch_size: int = 8,
        epochs: int = 10,
        meta_lr: float = 5e-4,
        seed: int = 0,
    ) -> None:
        super().__init__(
            text, classnames, n_ctx=n_ctx, ctx_init=ctx_init, class_specific=False, steps=steps, lr=lr, seed=seed
        )
        self.meta_lr = meta_lr
        width = self.ctx.shape[-1]
        hidden = max(1, dim // 16)
        torch.manual_seed(seed)
        self.meta_net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width))
        # pi(x) starts at 0: the prompt starts as CoOp's context, not buried under the output layer's random bias
        nn.init.zeros_(self.meta_net[2].weight)
        nn.init.zeros_(self.meta_net[2].bias)
        self.batch_size, self.epochs = batch_size, epochs

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.meta_net(x.float())  # [B, W]
        ctx = self.ctx[None] + bias[:, None]  # [B, M, W]
        ctx = ctx[:, None].expand(-1, len(self.classnames), -1, -1)  # [B, C, M, W]
        w = self._encode(ctx)  # [B, C, D]
        return self.scale * torch.einsum("bd,bcd->bc", x.float(), w)

    def fit(self, train: LabelledFeatures, val: LabelledFeatures | None = None) -> CoCoOp:
        self._check(train)
        g = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)

        def loss(_step: int) -> torch.Tensor:
            idx = torch.randperm(len(train), generator=g)[: self.batch_size]
            return F.cross_entropy(self.logits(train.features[idx]), train.labels[idx])

        with _Frozen(self.text.encoder):
            self.train()
            steps = self.steps or self.epochs * math.ceil(len(train) / self.batch_size)
            meta = {"params": list(self.meta_net.parameters()), "lr": self.meta_lr}
            _optimise([{"params": [self.ctx]}, meta], loss, steps, self.lr)
        return self.eval()


# --- feature adapters ------------------------------------------------------------------------------------------------
class CLIPAdapter(ZeroShot):
    """``f' = alpha * A(f) + (1 - alpha) * f`` with ``A`` = Linear-ReLU-Linear-ReLU (bottleneck ``D / reduction``),
    scored against the zero-shot class weights. ``alpha`` from ``alpha_grid`` on the validation split."""

    method = "clip-adapter"
    open_vocabulary = True
    config_fields = (*ZeroShot.config_fields, "alpha", "reduction", "steps", "lr", "seed")

    def __init__(
        self,
        text: TextSide | None,
        classnames: Sequence[str],
        dim: int,
        reduction: int = 4,
        alpha_grid: Sequence[float] = (0.2, 0.5, 0.8),
        steps: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        seed: int = 0,
        **zs: Any,
    ) -> None:
        super().__init__(text, classnames, **zs)
        torch.manual_seed(seed)
        self.adapter = nn.Sequential(
            nn.Linear(dim, dim // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(dim // reduction, dim, bias=False),
            nn.ReLU(inplace=True),
        )
        self.alpha_grid, self.alpha = list(alpha_grid), float(alpha_grid[0])
        self.steps, self.lr, self.weight_decay, self.seed, self.reduction = steps, lr, weight_decay, seed, reduction

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        f = F.normalize(self.alpha * self.adapter(x) + (1 - self.alpha) * x, dim=-1)
        return self.scale * f @ self.weights.T

    def fit(self, train: LabelledFeatures, val: LabelledFeatures | None = None) -> CLIPAdapter:
        self._check(train)
        grid = self.alpha_grid if val is not None and len(val) else self.alpha_grid[:1]
        best = None
        for alpha in grid:
            torch.manual_seed(self.seed)
            for m in self.adapter:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
            self.alpha = float(alpha)
            self.train()
            _optimise(
                list(self.adapter.parameters()),
                lambda _: F.cross_entropy(self.logits(train.features), train.labels),
                self.steps,
                self.lr,
                self.weight_decay,
            )
            acc = accuracy(self.predict_logits(val.features), val.labels) if val is not None and len(val) else 0.0
            if best is None or acc > best[0] + 1e-9:
                best = (acc, self.alpha, {k: v.clone() for k, v in self.adapter.state_dict().items()})
        self.alpha = best[1]
        self.adapter.load_state_dict(best[2])
        return self.eval()


class TipAdapter(ZeroShot):
    """Training-free cache model over the few-shot embeddings; ``alpha``/``beta`` searched on the validation split.
    ``finetune=True`` is Tip-Adapter-F: the cache keys become parameters trained with cross-entropy."""

    method = "tip-adapter"
    open_vocabulary = False
    with_classes = TransferHead.with_classes
    alpha_grid: ClassVar[tuple[float, ...]] = (0.1, 0.3, 1.0, 3.0, 10.0)
    beta_grid: ClassVar[tuple[float, ...]] = (1.0, 3.0, 5.5, 10.0, 20.0)
    config_fields = (*ZeroShot.config_fields, "alpha", "beta", "finetune", "steps", "lr", "seed")

    def __init__(
        self,
        text: TextSide | None,
        classnames: Sequence[str],
        dim: int,
        alpha: float = 1.0,
        beta: float = 5.5,
        finetune: bool = False,
        steps: int = 200,
        lr: float = 1e-3,
        seed: int = 0,
        search: bool = True,
        **zs: Any,
    ) -> None:
        super().__init__(text, classnames, **zs)
        self.alpha, self.beta, self.finetune, self.search = float(alpha), float(beta), finetune, search
        self.steps, self.lr, self.seed = steps, lr, seed
        self.keys = nn.Parameter(torch.zeros(0, dim), requires_grad=finetune)
        self.register_buffer("values", torch.zeros(0, len(self.classnames)))
        if finetune:
            self.method = "tip-adapter-f"

    def _cache_logits(self, x: torch.Tensor) -> torch.Tensor:
        if not len(self.keys):
            return torch.zeros(len(x), len(self.classnames))
        affinity = x @ F.normalize(self.keys, dim=-1).T if self.finetune else x @ self.keys.T
        return torch.exp(-self.beta * (1 - affinity)) @ self.values

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        zs = self.scale * x @ self.weights.T
        return zs if self.alpha == 0 else zs + self.alpha * self._cache_logits(x)

    def fit(self, train: LabelledFeatures, val: LabelledFeatures | None = None) -> TipAdapter:
        self._check(train)
        with torch.no_grad():
            self.keys = nn.Parameter(train.features.float().clone(), requires_grad=self.finetune)
            self.values = F.one_hot(train.labels, len(self.classnames)).float()
        if self.finetune:
            torch.manual_seed(self.seed)
            self.train()
            _optimise(
                [self.keys], lambda _: F.cross_entropy(self.logits(train.features), train.labels), self.steps, self.lr
            )
        if self.search and val is not None and len(val):
            best = None
            with torch.no_grad():
                for a in self.alpha_grid:
                    for b in self.beta_grid:
                        self.alpha, self.beta = a, b
                        acc = accuracy(self.logits(val.features.float()), val.labels)
                        if best is None or acc > best[0] + 1e-9:
                            best = (acc, a, b)
            self.alpha, self.beta = best[1], best[2]
        return self.eval()


METHODS = ("zeroshot", "linear-probe", "coop", "cocoop", "clip-adapter", "tip-adapter", "tip-adapter-f")


def make_head(
    method: str,
    text: TextSide,
    classnames: Sequence[str],
    dim: int,
    seed: int = 0,
    templates: Sequence[str] | None = None,
    zeroshot_weights: torch.Tensor | None = None,
    **options: Any,
) -> TransferHead:
    """A head by name (:data:`METHODS`). ``options`` go to its constructor (``n_ctx``, ``ctx_init``,
    ``class_specific``, ``steps``, ``lr``...); ``zeroshot_weights`` reuses already computed template ensembles."""
    zs = {"templates": templates, "weights": zeroshot_weights}
    if method == "zeroshot":
        return ZeroShot(text, classnames, **zs, **options)
    if method == "linear-probe":
        return LinearProbe(text, classnames, dim, **options, **zs)
    if method == "coop":
        return CoOp(text, classnames, seed=seed, **options)
    if method == "cocoop":
        return CoCoOp(text, classnames, dim, seed=seed, **options)
    if method == "clip-adapter":
        return CLIPAdapter(text, classnames, dim, seed=seed, **options, **zs)
    if method in ("tip-adapter", "tip-adapter-f"):
        return TipAdapter(text, classnames, dim, finetune=method == "tip-adapter-f", seed=seed, **options, **zs)
    raise TransferError(f"unknown transfer method {method!r}; known: {', '.join(METHODS)}")


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 or math.isnan(a) or math.isnan(b) else 2 * a * b / (a + b)
