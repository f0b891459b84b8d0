"""The training demo: one training run on the embedded default.

    python jobs/train_demo.py   (or: raylm train --config jobs/configs/gpt_tiny.yaml)

Tokenizes the Python standard library's own sources (or reuses the shards), trains a small
GPT with 2 CPU workers under ZeRO-2 on a local Ray, logs to MLflow in ./mlflow.db, then
prints the validation loss, where the checkpoint and model are, how to open the MLflow UI,
and a sample from the trained model.
"""

import sys
import time
from pathlib import Path

from raylm.config_load import load_config, parse_override_args
from raylm.errors import UserError

CONFIG = Path(__file__).resolve().parent / "configs" / "gpt_tiny.yaml"


def main(argv: list[str]) -> int:
    from raylm.commands.train import summary
    from raylm.train.run import run_training

    started = time.time()
    cfg = load_config(CONFIG, parse_override_args(argv))
    print(f"raylm demo: {cfg.model.arch} d_model={cfg.model.d_model} n_layers={cfg.model.n_layers}, "
          f"{cfg.parallel.num_workers} CPU workers, ZeRO-{cfg.parallel.zero_stage}, {cfg.train.max_steps} steps "
          f"on corpus '{cfg.data.corpus}'", flush=True)
    try:
        result = run_training(cfg)
    except UserError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    _sample(result.model_dir)
    print(f"demo finished in {time.time() - started:.0f} s")
    return 0


def _sample(model_dir) -> None:
    from tokenizers import Tokenizer

    from raylm.model.checkpoint import load_model
    from raylm.model.generate import generate

    model, model_cfg = load_model(model_dir)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    prompt = "def __init__(self"
    ids = tokenizer.encode(prompt).ids
    import torch

    length = min(40, model_cfg.max_seq_len - len(ids))  # positions the model knows
    new = generate(model, torch.tensor([ids]), max_new_tokens=length, temperature=0.8, top_k=40, seed=0)
    print(f"\nsample (temperature 0.8):\n{prompt}{tokenizer.decode(new[0].tolist())}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
