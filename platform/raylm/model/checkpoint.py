"""The portable raylm model format: a directory any raylm version can load without the training state.

A model directory holds::

    model_config.yaml   the ModelConfig as YAML (``cfg.model_dump(mode="json")``)
    model.safetensors   the weights, tied tensors stored once (``safetensors.torch.save_model``)
    tokenizer.json      the tokenizer, when one was given (optional)

``save_model(model, cfg, out_dir)`` writes it; ``load_model(out_dir)`` rebuilds the model from
the config and loads the weights strictly (every parameter present, nothing left over), in
eval mode. Only safetensors is read, so loading never unpickles code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model
from torch import nn

from raylm.config import ModelConfig
from raylm.errors import UserError

CONFIG_FILE = "model_config.yaml"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


def save_model(model: nn.Module, cfg: ModelConfig, out_dir: str | Path,
               tokenizer_path: str | Path | None = None) -> Path:
    """Write ``model`` and ``cfg`` (and a copy of ``tokenizer_path``) to ``out_dir``; returns the directory.

    A wrapper that keeps the model in ``.module`` (DDP, DeepSpeed) is unwrapped first, so the
    names are the bare model's.
    """
    if tokenizer_path is not None and not Path(tokenizer_path).is_file():
        raise UserError(f"tokenizer file not found: {tokenizer_path}; pass the path of a tokenizer.json or None")
    inner = getattr(model, "module", None)
    model = inner if isinstance(inner, nn.Module) else model
    _check_model_fits_config(model, cfg)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create model directory {out}: {exc}; choose a writable path") from None
    (out / CONFIG_FILE).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    save_safetensors_model(model, str(out / WEIGHTS_FILE), metadata={"format": "pt", "raylm_arch": cfg.arch})
    if tokenizer_path is not None and Path(tokenizer_path).resolve() != (out / TOKENIZER_FILE).resolve():
        shutil.copyfile(tokenizer_path, out / TOKENIZER_FILE)
    return out


def _check_model_fits_config(model: nn.Module, cfg: ModelConfig) -> None:
    """Refuse to write weights that ``load_model`` could not load back into ``build_model(cfg)``.

    The reference model is built on the meta device: no memory, no initialisation cost.
    """
    from raylm.model import build_model

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"{k} missing" for k in expected if k not in actual]
    problems += [f"{k} unexpected" for k in actual if k not in expected]
    problems += [f"{k} has shape {actual[k]}, the config implies {expected[k]}"
                 for k in expected if k in actual and actual[k] != expected[k]]
    if problems:
        shown = "; ".join(problems[:6]) + (f" and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise UserError(f"the model does not match the config given to save_model ({shown}); "
                        "pass the ModelConfig the model was built from")


def model_dir(path: str | Path) -> Path:
    """``path`` as a model directory, or a :class:`UserError` saying what is missing."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model directory not found: {path}; give a directory written by raylm.model.save_model")
    if not path.is_dir():
        raise UserError(f"{path} is a file, not a model directory; give the directory holding {CONFIG_FILE}")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        hint = " (it looks like a Hugging Face directory: use raylm.model.hf.load_hf)" \
            if (path / "config.json").is_file() else ""
        raise UserError(f"{path} is not a raylm model directory: {', '.join(missing)} missing{hint}")
    return path


def load_model_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` stored in the model directory ``path``."""
    file = model_dir(path) / CONFIG_FILE
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{file}: YAML syntax error: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{file}: expected a mapping of model options, got {type(data).__name__}")
    try:
        return ModelConfig(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'model'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"{file} is not a valid model config: {problems}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model saved in ``path`` and load its weights strictly; returns ``(model, cfg)`` in eval mode."""
    from raylm.model import build_model

    cfg = load_model_config(path)
    model = build_model(cfg)
    file = Path(path) / WEIGHTS_FILE
    try:
        load_safetensors_model(model, str(file), strict=True)
    except (RuntimeError, SafetensorError) as exc:
        raise UserError(
            f"the weights in {file} do not fit the model that {Path(path) / CONFIG_FILE} describes: "
            f"{str(exc).strip()}; save config and weights together with raylm.model.save_model"
        ) from None
    return model.to(device).eval(), cfg


__all__ = ["CONFIG_FILE", "TOKENIZER_FILE", "WEIGHTS_FILE", "load_model", "load_model_config", "model_dir",
           "save_model"]
