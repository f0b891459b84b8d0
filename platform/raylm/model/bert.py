"""BERT: a bidirectional encoder with a masked-LM head and an optional next-sentence head
(Devlin et al. 2019, section 3.1).

``model(ids)`` returns MLM logits ``(batch, seq, vocab)``. With ``mlm_labels`` (the
masked positions' original ids, ``-100`` elsewhere; see
:func:`raylm.model.objectives.mlm_mask`) it returns a
:class:`~raylm.model.output.ModelOutput`, adding the NSP loss when ``nsp_labels`` is given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raylm.config import ModelConfig
from raylm.model.blocks import Block, Embeddings, init_weights, make_norm
from raylm.model.feedforward import activation_fn
from raylm.model.output import ModelOutput, assemble, token_cross_entropy


class BERT(nn.Module):
    def __init__(self, cfg: ModelConfig, expert_group=None):
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg, segments=cfg.type_vocab_size)
        self.blocks = nn.ModuleList(Block(cfg, i, causal=False, expert_group=expert_group) for i in range(cfg.n_layers))
        self.final_norm = make_norm(cfg) if cfg.norm_position == "pre" else None
        # MLM head: dense + activation + norm, then the (tied) vocabulary projection with a bias.
        self.mlm_dense = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.mlm_act = activation_fn(cfg.activation)
        self.mlm_norm = make_norm(cfg)
        self.mlm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=True)
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model) if cfg.nsp_head else None
        self.nsp = nn.Linear(cfg.d_model, 2) if cfg.nsp_head else None
        init_weights(self, cfg, cfg.n_layers)
        if cfg.tie_embeddings:
            self.mlm_head.weight = self.embed.tokens.weight

    def encode(self, ids: torch.Tensor, segment_ids: torch.Tensor | None = None,
               attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list]:
        """Hidden states ``(batch, seq, d_model)`` and the MoE stats of each MoE layer."""
        key_mask = attention_mask.bool() if attention_mask is not None else None
        x = self.embed(ids, segment_ids=segment_ids)
        stats = []
        for block in self.blocks:
            x, moe_stats = block(x, key_mask=key_mask)
            if moe_stats is not None:
                stats.append(moe_stats)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, stats

    def forward(self, ids: torch.Tensor, segment_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, mlm_labels: torch.Tensor | None = None,
                nsp_labels: torch.Tensor | None = None) -> torch.Tensor | ModelOutput:
        hidden, stats = self.encode(ids, segment_ids, attention_mask)
        logits = self.mlm_head(self.mlm_norm(self.mlm_act(self.mlm_dense(hidden))))
        if mlm_labels is None and nsp_labels is None:
            return logits
        loss = token_cross_entropy(logits, mlm_labels) if mlm_labels is not None else logits.new_zeros(())
        nsp_logits = None
        if self.nsp is not None:
            nsp_logits = self.nsp(torch.tanh(self.pooler(hidden[:, 0])))
            if nsp_labels is not None:
                loss = loss + F.cross_entropy(nsp_logits.float(), nsp_labels)
        elif nsp_labels is not None:
            raise ValueError("nsp_labels given but the model has no next-sentence head; set model.nsp_head: true")
        return assemble(self.cfg, logits, loss, stats, extra_logits=nsp_logits)
