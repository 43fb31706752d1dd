"""``ModalityEncoder``: stem (from the modality plugin) -> [CLS] + positions -> transformer trunk -> head.

One interface for every modality (timm style). The logit scale lives beside the embedding (``logit_scale``), never
multiplied into it: a learnable parameter, or a fixed buffer for ImageBind's fixed per-modality temperatures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bind.config import EncoderConfig, logit_scale_value
from bind.errors import InputError
from bind.nn.heads import EmbeddingHead
from bind.nn.stems import StemOutput
from bind.nn.transformer import PatchDropout, Transformer
from bind.registry import get_modality


def save_as_scalars(module: nn.Module, *names: str) -> None:
    """Keep ``module``'s one-element tensors ``names`` (parameters or buffers, direct attributes) as shape ``[1]`` in
    the module and as scalars (shape ``[]``) in its state dict; loading takes either shape.

    FSDP (``FullyShardedDataParallel`` and ``fully_shard``) refuses scalar parameters, while every file bind writes or
    converts holds logit scales as scalars (ImageBind's and LanguageBind's convention): files stay as they are.
    """

    def to_scalars(mod, state_dict, prefix, local_metadata):
        for name in names:
            if (t := state_dict.get(prefix + name)) is not None and t.shape == (1,):
                state_dict[prefix + name] = t.reshape(())

    def from_scalars(mod, state_dict, prefix, *args):
        for name in names:
            if (t := state_dict.get(prefix + name)) is not None and t.ndim == 0:
                state_dict[prefix + name] = torch.reshape(t, (1,))  # also Lightning's lazily loaded tensors

    module.register_state_dict_post_hook(to_scalars)
    module.register_load_state_dict_pre_hook(from_scalars)


def add_logit_scale(module: nn.Module, cfg: EncoderConfig) -> None:
    """Give ``module`` its ``logit_scale`` (log space): a parameter when learnable, else a fixed buffer; one element
    in the module, a scalar in the state dict (:func:`save_as_scalars`)."""
    scale = torch.tensor([float(cfg.logit_scale_init)])
    if cfg.logit_scale_learnable:
        module.logit_scale = nn.Parameter(scale)
    else:
        module.register_buffer("logit_scale", scale)
    save_as_scalars(module, "logit_scale")


@dataclass
class TokenLayout:
    """How :meth:`ModalityEncoder.forward_features` lays out its tokens: ``[B, L, D]`` (joint) or ``[B, T, N, D]``
    (divided space-time: ``num_prefix_tokens`` CLS tokens per frame)."""

    num_prefix_tokens: int = 0  #: CLS tokens in front of the stem's tokens
    time_steps: int | None = None  #: joint tokens: the stem's tokens are time-major over this many steps (None: no
    #: time axis the encoder exposes)
    key_padding_mask: torch.Tensor | None = None  #: ``[B, L]``, True = padding (prefix tokens included)
    pool_index: torch.Tensor | None = None  #: ``[B]``, the token ``eot`` heads pool


class ModalityEncoder(nn.Module):
    """Encodes one modality into unit-norm embeddings ``[B, embed_dim]``.

    Accepts a batch ``[B, *sample]`` or several clips per sample ``[B, clips, *sample]`` (clip embeddings are
    averaged and re-normalised, ImageBind's multi-clip inference).
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.modality = get_modality(cfg.modality)
        try:
            self.stem = self.modality.stem(cfg)
        except ValueError as e:  # the stems' own checks do not know which modality they were building
            if str(e).startswith(f"{cfg.modality}: "):
                raise
            raise ValueError(f"{cfg.modality}: {e}") from e
        n_cls = cfg.num_cls_tokens
        self.cls_token = nn.Parameter(torch.randn(1, n_cls, cfg.width) * 0.02) if n_cls else None
        self.patch_dropout = PatchDropout(cfg.patch_dropout, n_cls)
        self.ln_pre = nn.LayerNorm(cfg.width, eps=cfg.norm_eps) if cfg.ln_pre else nn.Identity()
        self.trunk = Transformer(
            cfg.width,
            cfg.depth,
            cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            fused_qkv=cfg.fused_qkv,
            kv_bias_tokens=cfg.kv_bias_tokens,
            act=cfg.act,
            norm_eps=cfg.norm_eps,
            drop_path=cfg.drop_path,
            backend=cfg.attn_backend,
            divided=cfg.attention == "divided",
            num_frames=getattr(self.modality.stem_config(cfg), "num_frames", None) or 8,
            grad_checkpointing=cfg.grad_checkpointing,
        )
        self.head = EmbeddingHead(
            cfg.width,
            cfg.embed_dim,
            pool=cfg.pool,
            norm_eps=cfg.norm_eps,
            dropout=cfg.head_dropout,
            proj_bias=cfg.proj_bias,
            num_prefix_tokens=n_cls,
        )
        add_logit_scale(self, cfg)

    @property
    def name(self) -> str:
        return self.cfg.modality

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor, norm: bool = False) -> tuple[torch.Tensor, TokenLayout]:
        """Trunk output tokens of a batch ``[B, *sample]`` and their :class:`TokenLayout` (timm's split: the head is
        :meth:`forward_head`). ``norm`` applies the head's LayerNorm to every token (what token consumers such as
        QA pooling read)."""
        out = self.stem(x)
        return self.forward_stem_output(out if isinstance(out, StemOutput) else StemOutput(out), norm=norm)

    def forward_stem_output(self, out: StemOutput, norm: bool = False) -> tuple[torch.Tensor, TokenLayout]:
        """:meth:`forward_features` from the stem's output onwards."""
        tokens, pad = out.tokens, out.key_padding_mask
        if self.cls_token is not None:
            cls = self.cls_token.to(tokens.dtype)
            if tokens.dim() == 4:  # [B, T, N, D]: one CLS per frame
                cls = cls[:, None].expand(tokens.shape[0], tokens.shape[1], -1, -1)
                tokens = torch.cat([cls, tokens], dim=2)
            else:
                tokens = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
            if pad is not None:
                pad = torch.cat([pad.new_zeros(pad.shape[0], self.cls_token.shape[1]), pad], dim=1)
        if pad is None:
            tokens = self.patch_dropout(tokens)
        tokens = self.ln_pre(tokens)
        tokens = self.trunk(tokens, causal=self.cfg.causal, key_padding_mask=pad)
        if norm:
            tokens = self.head.norm(tokens)
        n_cls = 0 if self.cls_token is None else self.cls_token.shape[1]
        return tokens, TokenLayout(n_cls, out.time_steps, pad, out.pool_index)

    def forward_head(self, tokens: torch.Tensor, layout: TokenLayout, normalize: bool = True) -> torch.Tensor:
        """Embeddings ``[B, embed_dim]`` of :meth:`forward_features`' tokens: pool, LayerNorm, project."""
        return self.head(
            tokens, pool_index=layout.pool_index, key_padding_mask=layout.key_padding_mask, normalize=normalize
        )

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Trunk output tokens, the key padding mask and the pooling index."""
        tokens, layout = self.forward_features(x)
        return tokens, layout.key_padding_mask, layout.pool_index

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        self.modality.check_input(x, self.cfg)
        clips = None
        if x.dim() == self.modality.sample_ndim + 2:
            clips = x.shape[1]
            x = x.flatten(0, 1)
        emb = self.forward_head(*self.forward_features(x), normalize=normalize)
        if clips is not None:
            emb = emb.reshape(-1, clips, emb.shape[-1]).mean(dim=1)
            if normalize:
                emb = F.normalize(emb, dim=-1)
        return emb

    # --- text path from input embeddings (prompt learning: bind.transfer) -------------------------------------------
    def input_embeddings(self) -> nn.Embedding:
        """The token-embedding table of a token stem (text encoders)."""
        emb = getattr(self.stem, "token_embedding", None)
        if not isinstance(emb, nn.Embedding) or not hasattr(self.stem, "from_embeddings"):
            raise InputError(
                f"{self.name}: this encoder has no token embeddings (only text encoders take input embeddings)"
            )
        return emb

    def encode_text_embeddings(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        """Embed token embeddings ``[B, L, width]`` (``input_embeddings()(ids)`` with any rows replaced, e.g. CoOp's
        learned context) with ``attention_mask [B, L]`` (1 = token, 0 = padding; the last token is the end-of-text
        token): equals ``forward(ids)`` for unmodified embeddings of tokenised text."""
        self.input_embeddings()
        return self.forward_head(
            *self.forward_stem_output(self.stem.from_embeddings(inputs_embeds, attention_mask)), normalize=normalize
        )

    def get_logit_scale(self) -> torch.Tensor:
        """``exp(logit_scale)``, at most ``cfg.logit_scale_max`` (100, CLIP; ``None``: uncapped)."""
        return logit_scale_value(self.logit_scale.reshape(()), self.cfg)
