"""Hugging Face interop without ``transformers``: import GPT-2 and BERT checkpoints, export GPT as GPT-2.

``load_hf(path)`` reads a local Hugging Face model directory (``config.json`` plus
``model.safetensors``, ``pytorch_model.bin`` or their sharded ``*.index.json`` forms) of a
GPT-2 (Radford et al. 2019) or BERT (Devlin et al. 2019) model and returns the raylm model
that computes the same function, in eval mode and fp32:

- GPT-2: learned positions, pre-norm LayerNorm (``layer_norm_epsilon``), ``gelu_new`` as
  ``gelu_tanh``, biases, tied head. GPT-2's ``Conv1D`` stores weights as ``(in, out)``, the
  transpose of ``nn.Linear``; ``c_attn`` holds the query, key and value projections side by side.
- BERT: learned positions, segment embeddings, post-norm LayerNorm (``layer_norm_eps``), the
  MLM transform (dense, activation, LayerNorm) and the tied decoder with its bias; the pooler
  and next-sentence head when the checkpoint has them (``BertForPreTraining``).

``export_hf(model, cfg, out_dir)`` writes a raylm GPT as a GPT-2 directory that
``transformers.GPT2LMHeadModel.from_pretrained`` loads. Weights are read with safetensors or
``torch.load(weights_only=True)``; nothing is unpickled beyond tensors.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from raylm.config import ModelConfig
from raylm.errors import UserError

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
BIN_FILE = "pytorch_model.bin"
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def _activation(name: str, key: str) -> str:
    """raylm's name for a Hugging Face activation function ``name`` (config key ``key``)."""
    if name in _TANH_GELUS:
        return "gelu_tanh"
    if name in ("gelu", "relu"):
        return name
    raise UserError(f"{key}: {name!r} is not supported; raylm imports gelu, gelu_new (tanh GELU) and relu")


def _gpt2_config(c: dict) -> dict:
    """ModelConfig fields for a GPT-2 ``config.json`` (missing keys take GPT2Config's defaults)."""
    problems = []
    if c.get("scale_attn_by_inverse_layer_idx"):
        problems.append("scale_attn_by_inverse_layer_idx: true (raylm scales scores by 1/sqrt(head_dim) only)")
    if not c.get("scale_attn_weights", True):
        problems.append("scale_attn_weights: false (raylm always scales scores by 1/sqrt(head_dim))")
    if c.get("add_cross_attention"):
        problems.append("add_cross_attention: true (a GPT-2 decoder with cross-attention)")
    if problems:
        raise UserError("cannot import this GPT-2 model: " + "; ".join(problems))
    d_model = c.get("n_embd", c.get("hidden_size", 768))
    return dict(
        arch="gpt", vocab_size=c.get("vocab_size", 50257), max_seq_len=c.get("n_positions", 1024),
        d_model=d_model, n_layers=c.get("n_layer", 12), n_heads=c.get("n_head", 12),
        d_ff=c.get("n_inner") or 4 * d_model,
        activation=_activation(c.get("activation_function", "gelu_new"), "activation_function"),
        norm="layernorm", norm_position="pre", norm_eps=c.get("layer_norm_epsilon", 1e-5), pos_encoding="learned",
        dropout=c.get("resid_pdrop", 0.1), attn_dropout=c.get("attn_pdrop", 0.1), bias=True,
        tie_embeddings=c.get("tie_word_embeddings", True), init_std=c.get("initializer_range", 0.02),
    )


def _bert_config(c: dict) -> dict:
    """ModelConfig fields for a BERT ``config.json`` (missing keys take BertConfig's defaults)."""
    problems = []
    position = c.get("position_embedding_type", "absolute")
    if position != "absolute":
        problems.append(f"position_embedding_type: {position!r} (raylm's BERT uses absolute learned positions)")
    if c.get("is_decoder") or c.get("add_cross_attention"):
        problems.append("is_decoder/add_cross_attention: true (raylm's BERT is a bidirectional encoder)")
    if problems:
        raise UserError("cannot import this BERT model: " + "; ".join(problems))
    return dict(
        arch="bert", vocab_size=c.get("vocab_size", 30522), max_seq_len=c.get("max_position_embeddings", 512),
        d_model=c.get("hidden_size", 768), n_layers=c.get("num_hidden_layers", 12),
        n_heads=c.get("num_attention_heads", 12), d_ff=c.get("intermediate_size", 3072),
        activation=_activation(c.get("hidden_act", "gelu"), "hidden_act"), norm="layernorm", norm_position="post",
        norm_eps=c.get("layer_norm_eps", 1e-12), pos_encoding="learned", dropout=c.get("hidden_dropout_prob", 0.1),
        attn_dropout=c.get("attention_probs_dropout_prob", 0.1), bias=True,
        tie_embeddings=c.get("tie_word_embeddings", True), init_std=c.get("initializer_range", 0.02),
        type_vocab_size=c.get("type_vocab_size", 2),
        nsp_head="BertForPreTraining" in (c.get("architectures") or []),
    )


def hf_config_to_model_config(hf_config: dict) -> ModelConfig:
    """The :class:`ModelConfig` of a Hugging Face GPT-2 or BERT ``config.json`` (as a dict).

    For BERT, ``nsp_head`` follows ``architectures`` (``BertForPreTraining``); :func:`load_hf`
    decides it from the weights instead.
    """
    model_type = hf_config.get("model_type")
    builders = {"gpt2": _gpt2_config, "bert": _bert_config}
    if model_type not in builders:
        raise UserError(f"model_type {model_type!r} is not supported; raylm imports Hugging Face "
                        f"{' and '.join(builders)} models (config.json's model_type)")
    fields = builders[model_type](hf_config)
    try:
        return ModelConfig(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise UserError(f"the {model_type} config does not map to a valid raylm model: {problems}") from None


def read_hf_config(path: str | Path) -> dict:
    """``config.json`` of the Hugging Face model directory ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"Hugging Face model directory not found: {path}; give a local directory with config.json "
                        "and the weights (there is no hub download)")
    file = path / CONFIG_FILE
    if not file.is_file():
        raise UserError(f"{file} not found; a Hugging Face model directory needs config.json")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{file}: expected a JSON object")
    return data


def _load_weight_file(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            return load_file(str(file))
        return torch.load(file, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        # torch.load's weights-only unpickler refuses anything but tensors with UnpicklingError
        raise UserError(f"cannot read weights {file}: {exc}; re-save them as {SAFETENSORS_FILE}") from None


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face directory: safetensors first, then ``pytorch_model.bin``, single or sharded."""
    path = Path(path)
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_FILE + ".index.json"), (BIN_FILE, BIN_FILE + ".index.json")):
        if (path / single).is_file():
            return _load_weight_file(path / single)
        if (path / index).is_file():
            try:
                shards = sorted(set(json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as exc:
                raise UserError(f"{path / index}: not a weight index ({exc})") from None
            weights: dict[str, torch.Tensor] = {}
            for shard in shards:
                weights.update(_load_weight_file(path / shard))
            return weights
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise UserError(f"no weights in {path}: expected {SAFETENSORS_FILE} or {BIN_FILE} (found {found})")


class _Weights:
    """Hugging Face tensors by name; ``take`` marks a tensor used, ``check_all_used`` reports leftovers."""

    def __init__(self, tensors: dict[str, torch.Tensor], source: Path, prefix: str, ignore: str):
        self.tensors = {k.removeprefix(prefix): v for k, v in tensors.items() if not re.search(ignore, k)}
        self.source, self.used = source, set()

    def has(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str, *alternatives: str) -> torch.Tensor:
        for candidate in (name, *alternatives):
            if candidate in self.tensors:
                self.used.add(candidate)
                return self.tensors[candidate]
        raise UserError(f"the weights in {self.source} lack {name!r}; is config.json (n_layer, architectures) "
                        "the one these weights were saved with?")

    def check_all_used(self) -> None:
        unused = sorted(set(self.tensors) - self.used)
        if unused:
            shown = ", ".join(unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
            raise UserError(f"the weights in {self.source} hold tensors raylm cannot place: {shown}; "
                            "the checkpoint is a variant this importer does not support")


def _linear(w: _Weights, ours: str, theirs: str, conv1d: bool = False) -> dict[str, torch.Tensor]:
    """``ours.weight``/``ours.bias`` from ``theirs``; Conv1D weights are transposed to nn.Linear's layout."""
    weight = w.take(f"{theirs}.weight")
    return {f"{ours}.weight": weight.t() if conv1d else weight, f"{ours}.bias": w.take(f"{theirs}.bias")}


def _norm(w: _Weights, ours: str, theirs: str) -> dict[str, torch.Tensor]:
    """LayerNorm parameters (old BERT checkpoints name them gamma and beta)."""
    return {f"{ours}.weight": w.take(f"{theirs}.weight", f"{theirs}.gamma"),
            f"{ours}.bias": w.take(f"{theirs}.bias", f"{theirs}.beta")}


def _gpt2_state_dict(cfg: ModelConfig, w: _Weights) -> dict[str, torch.Tensor]:
    sd = {"embed.tokens.weight": w.take("wte.weight"), "embed.positions.weight": w.take("wpe.weight")}
    for i in range(cfg.n_layers):
        h, b = f"h.{i}", f"blocks.{i}"
        q, k, v = w.take(f"{h}.attn.c_attn.weight").t().chunk(3, dim=0)
        qb, kb, vb = w.take(f"{h}.attn.c_attn.bias").chunk(3, dim=0)
        sd.update({f"{b}.attn.q_proj.weight": q, f"{b}.attn.k_proj.weight": k, f"{b}.attn.v_proj.weight": v,
                   f"{b}.attn.q_proj.bias": qb, f"{b}.attn.k_proj.bias": kb, f"{b}.attn.v_proj.bias": vb})
        sd.update(_linear(w, f"{b}.attn.o_proj", f"{h}.attn.c_proj", conv1d=True))
        sd.update(_norm(w, f"{b}.attn_norm", f"{h}.ln_1") | _norm(w, f"{b}.ffn_norm", f"{h}.ln_2"))
        sd.update(_linear(w, f"{b}.ffn.w_in", f"{h}.mlp.c_fc", conv1d=True))
        sd.update(_linear(w, f"{b}.ffn.w_out", f"{h}.mlp.c_proj", conv1d=True))
    sd.update(_norm(w, "final_norm", "ln_f"))
    if cfg.tie_embeddings:
        if w.has("lm_head.weight"):  # .bin files store the tied head again
            w.take("lm_head.weight")
        sd["lm_head.weight"] = sd["embed.tokens.weight"]
    else:
        sd["lm_head.weight"] = w.take("lm_head.weight")
    return sd


def _bert_state_dict(cfg: ModelConfig, w: _Weights) -> dict[str, torch.Tensor]:
    e = "embeddings"
    sd = {"embed.tokens.weight": w.take(f"{e}.word_embeddings.weight"),
          "embed.positions.weight": w.take(f"{e}.position_embeddings.weight")}
    if cfg.type_vocab_size:
        sd["embed.segments.weight"] = w.take(f"{e}.token_type_embeddings.weight")
    sd.update(_norm(w, "embed.norm", f"{e}.LayerNorm"))
    for i in range(cfg.n_layers):
        h, b = f"encoder.layer.{i}", f"blocks.{i}"
        for ours, theirs in (("q_proj", "self.query"), ("k_proj", "self.key"), ("v_proj", "self.value"),
                             ("o_proj", "output.dense")):
            sd.update(_linear(w, f"{b}.attn.{ours}", f"{h}.attention.{theirs}"))
        sd.update(_norm(w, f"{b}.attn_norm", f"{h}.attention.output.LayerNorm"))
        sd.update(_linear(w, f"{b}.ffn.w_in", f"{h}.intermediate.dense"))
        sd.update(_linear(w, f"{b}.ffn.w_out", f"{h}.output.dense"))
        sd.update(_norm(w, f"{b}.ffn_norm", f"{h}.output.LayerNorm"))
    p = "cls.predictions"
    sd.update(_linear(w, "mlm_dense", f"{p}.transform.dense") | _norm(w, "mlm_norm", f"{p}.transform.LayerNorm"))
    sd["mlm_head.bias"] = w.take(f"{p}.bias", f"{p}.decoder.bias")
    if w.has(f"{p}.decoder.bias"):  # .bin files store the shared bias twice
        w.take(f"{p}.decoder.bias")
    if cfg.tie_embeddings:
        if w.has(f"{p}.decoder.weight"):
            w.take(f"{p}.decoder.weight")
        sd["mlm_head.weight"] = sd["embed.tokens.weight"]
    else:
        sd["mlm_head.weight"] = w.take(f"{p}.decoder.weight")
    if cfg.nsp_head:
        sd.update(_linear(w, "pooler", "pooler.dense") | _linear(w, "nsp", "cls.seq_relationship"))
    elif w.has("pooler.dense.weight"):  # a pooler without an NSP head has no use in an MLM model
        for name in ("pooler.dense.weight", "pooler.dense.bias"):
            w.take(name)
    return sd


def _load_state(model: nn.Module, sd: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``sd`` into ``model`` after checking every shape; names refer to raylm's modules."""
    expected = model.state_dict()
    wrong = [f"{k}: {tuple(v.shape)} in the file, {tuple(expected[k].shape)} from config.json"
             for k, v in sd.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise UserError(f"the weights in {source} do not match its config.json: " + "; ".join(wrong[:5]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)


def load_hf(path: str | Path) -> nn.Module:
    """The raylm model (eval mode, fp32) equivalent to the local Hugging Face GPT-2 or BERT directory ``path``."""
    from raylm.model import build_model

    path = Path(path)
    hf_config = read_hf_config(path)
    cfg = hf_config_to_model_config(hf_config)
    tensors = read_hf_weights(path)
    if cfg.arch == "gpt":
        weights = _Weights(tensors, path, "transformer.", r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")
        sd = _gpt2_state_dict(cfg, weights)
    else:
        weights = _Weights(tensors, path, "bert.", r"embeddings\.(position_ids|token_type_ids)$")
        if not weights.has("cls.predictions.transform.dense.weight"):
            raise UserError(f"{path} holds a BERT without its masked-LM head (e.g. BertModel); raylm imports "
                            "BertForMaskedLM and BertForPreTraining checkpoints")
        nsp = weights.has("cls.seq_relationship.weight") and weights.has("pooler.dense.weight")
        cfg = ModelConfig(**{**cfg.model_dump(), "nsp_head": nsp})
        sd = _bert_state_dict(cfg, weights)
    weights.check_all_used()
    model = build_model(cfg)
    _load_state(model, sd, path)
    return model.eval()


def gpt2_incompatibilities(cfg: ModelConfig) -> list[str]:
    """Each option of ``cfg`` that GPT-2's layout cannot express (empty when export is possible)."""
    wanted = [("arch", cfg.arch, "gpt"), ("pos_encoding", cfg.pos_encoding, "learned"),
              ("norm", cfg.norm, "layernorm"), ("norm_position", cfg.norm_position, "pre"), ("bias", cfg.bias, True)]
    problems = [f"{key}={value!r} (GPT-2 needs {need!r})" for key, value, need in wanted if value != need]
    if cfg.activation not in _EXPORT_ACTIVATIONS:
        problems.append(f"activation={cfg.activation!r} (GPT-2 needs one of {', '.join(_EXPORT_ACTIVATIONS)})")
    if cfg.n_kv_heads != cfg.n_heads:
        problems.append(f"n_kv_heads={cfg.n_kv_heads} (GPT-2 needs n_kv_heads == n_heads = {cfg.n_heads})")
    if cfg.moe.n_experts:
        problems.append(f"moe.n_experts={cfg.moe.n_experts} (GPT-2 has no mixture of experts; needs 0)")
    return problems


def gpt2_config_dict(cfg: ModelConfig, bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """The GPT-2 ``config.json`` for a compatible raylm GPT config."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_seq_len, "n_embd": cfg.d_model, "n_layer": cfg.n_layers, "n_head": cfg.n_heads,
        "n_inner": cfg.d_ff, "activation_function": _EXPORT_ACTIVATIONS[cfg.activation],
        "layer_norm_epsilon": cfg.norm_eps, "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.attn_dropout, "initializer_range": cfg.init_std, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "add_cross_attention": False,
        "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": bos_id, "eos_token_id": eos_id,
        "pad_token_id": None, "use_cache": True,
    }


def _gpt2_tensors(model: nn.Module, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """raylm GPT weights under GPT-2 names in Conv1D layout; a tied head is left to the config."""
    sd = model.state_dict()
    out = {"transformer.wte.weight": sd["embed.tokens.weight"], "transformer.wpe.weight": sd["embed.positions.weight"]}
    for i in range(cfg.n_layers):
        h, b = f"transformer.h.{i}", f"blocks.{i}"
        projections = [f"{b}.attn.{name}_proj" for name in "qkv"]
        out[f"{h}.attn.c_attn.weight"] = torch.cat([sd[f"{p}.weight"] for p in projections], dim=0).t()
        out[f"{h}.attn.c_attn.bias"] = torch.cat([sd[f"{p}.bias"] for p in projections], dim=0)
        for theirs, ours, conv1d in (("attn.c_proj", "attn.o_proj", True), ("ln_1", "attn_norm", False),
                                     ("ln_2", "ffn_norm", False), ("mlp.c_fc", "ffn.w_in", True),
                                     ("mlp.c_proj", "ffn.w_out", True)):
            weight = sd[f"{b}.{ours}.weight"]
            out[f"{h}.{theirs}.weight"] = weight.t() if conv1d else weight
            out[f"{h}.{theirs}.bias"] = sd[f"{b}.{ours}.bias"]
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = sd["final_norm.weight"], sd["final_norm.bias"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    # Safetensors refuses tensors that share memory: give each its own contiguous CPU copy.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in out.items()}


def export_hf(model: nn.Module, cfg: ModelConfig, out_dir: str | Path,
              tokenizer_path: str | Path | None = None, eos_id: int | None = None) -> Path:
    """Write a compatible raylm GPT as a Hugging Face GPT-2 directory (config.json, model.safetensors).

    With ``tokenizer_path`` the tokenizer.json is copied along; ``eos_id`` (its end-of-text token, read
    by the caller: the data room owns tokenizers) becomes ``bos_token_id``/``eos_token_id``. Returns the
    directory.
    """
    problems = gpt2_incompatibilities(cfg)
    if problems:
        raise UserError("cannot export to the GPT-2 layout; incompatible options: " + "; ".join(problems))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc}; choose a writable directory") from None
    if tokenizer_path is not None:
        if Path(tokenizer_path).resolve() != (out / "tokenizer.json").resolve():
            shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    save_file(_gpt2_tensors(model, cfg), str(out / SAFETENSORS_FILE), metadata={"format": "pt"})
    config = gpt2_config_dict(cfg, bos_id=eos_id, eos_id=eos_id)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out


__all__ = ["export_hf", "gpt2_config_dict", "gpt2_incompatibilities", "hf_config_to_model_config", "load_hf",
           "read_hf_config", "read_hf_weights"]
