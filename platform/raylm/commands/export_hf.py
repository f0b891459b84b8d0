"""``raylm export-hf``: write a raylm GPT checkpoint as a Hugging Face GPT-2 directory."""

from __future__ import annotations

import argparse

EPILOG = """example:
  raylm export-hf runs/gpt_tiny/model out/gpt2-tiny
  python -c "from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('out/gpt2-tiny')"

CHECKPOINT is a model directory written by raylm.model.save_model (model_config.yaml,
model.safetensors, tokenizer.json). The model must use GPT-2's options: arch gpt, learned
positions, pre-norm layernorm, bias, gelu/gelu_tanh/relu, n_kv_heads == n_heads, no MoE."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-hf",
        help="export a GPT checkpoint to the Hugging Face GPT-2 layout",
        description="Write CHECKPOINT as OUT_DIR/config.json + model.safetensors (+ tokenizer.json), loadable "
        "with transformers.GPT2LMHeadModel.from_pretrained.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="raylm model directory (from save_model)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the GPT-2 files into")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from raylm.model.checkpoint import TOKENIZER_FILE, load_model, model_dir
    from raylm.model.hf import export_hf

    directory = model_dir(args.checkpoint)
    model, cfg = load_model(directory)
    tokenizer = directory / TOKENIZER_FILE
    eos_id = None
    if tokenizer.is_file():
        from raylm.data.tokenizer import SpecialTokens, load_tokenizer

        eos_id = SpecialTokens.from_tokenizer(load_tokenizer(tokenizer)).eos_id
    out = export_hf(model, cfg, args.out_dir, tokenizer_path=tokenizer if tokenizer.is_file() else None,
                    eos_id=eos_id)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"wrote {out} ({files}); load it with transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})")
    return 0
