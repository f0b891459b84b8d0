"""``raylm generate``: continue a prompt with a GPT checkpoint (or answer it with a T5 checkpoint)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  raylm generate runs/gpt_tiny/model --prompt "def main(" --max-new-tokens 80
  raylm generate runs/gpt_tiny/model --prompt "import" --temperature 0        # greedy
  raylm generate runs/gpt_tiny/model --prompt "class" --top-p 0.9 --seed 1   # nucleus sampling

CHECKPOINT is a model directory written by raylm.model.save_model; its tokenizer.json encodes
the prompt. Decoding stops at the tokenizer's end-of-text token (<eos>, <|endoftext|>, </s> or
[SEP]). For T5 the prompt is the encoder input and decoding starts from the pad token."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="sample text from a GPT or T5 checkpoint",
        description="Encode --prompt with the checkpoint's tokenizer, sample up to --max-new-tokens tokens "
        "and print the prompt followed by the continuation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="raylm model directory (from save_model)")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="most tokens to generate (default 50)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with mass >= p")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampler (random when omitted)")
    parser.set_defaults(func=_generate)


def _check_args(args: argparse.Namespace) -> None:
    from raylm.errors import UserError

    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")


def _check_length(cfg, prompt_len: int, max_new_tokens: int) -> None:
    """Absolute position encodings cannot go past max_seq_len: say so before decoding starts."""
    from raylm.errors import UserError

    if prompt_len == 0:
        raise UserError("the prompt encodes to no tokens; give a non-empty --prompt")
    if cfg.pos_encoding not in ("learned", "sinusoidal"):
        return
    decoder_len = max_new_tokens if cfg.arch == "t5" else prompt_len + max_new_tokens - 1
    if max(prompt_len, decoder_len) > cfg.max_seq_len:
        room = cfg.max_seq_len if cfg.arch == "t5" else cfg.max_seq_len - prompt_len + 1
        raise UserError(
            f"the prompt ({prompt_len} tokens) and --max-new-tokens {max_new_tokens} exceed the model's "
            f"max_seq_len ({cfg.max_seq_len}); use --max-new-tokens {max(room, 0)} or a shorter prompt"
        )


def _generate(args: argparse.Namespace) -> int:
    import torch

    from raylm.data.tokenizer import SpecialTokens, load_tokenizer
    from raylm.errors import UserError
    from raylm.model.checkpoint import TOKENIZER_FILE, load_model, load_model_config, model_dir
    from raylm.model.generate import generate

    _check_args(args)
    directory = model_dir(args.checkpoint)
    arch = load_model_config(directory).arch
    if arch not in ("gpt", "t5"):
        raise UserError(f"generation needs a gpt or t5 checkpoint; {directory} holds a {arch} model")
    if not (directory / TOKENIZER_FILE).is_file():
        raise UserError(f"{directory} has no {TOKENIZER_FILE}; save the model with tokenizer_path set")
    model, cfg = load_model(directory)
    tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
    specials = SpecialTokens.from_tokenizer(tokenizer)
    eos_id = specials.eos_id if specials.eos_id is not None else specials.sep_id
    prompt_ids = tokenizer.encode(args.prompt, add_special_tokens=False).ids
    if cfg.arch == "t5" and eos_id is not None:
        prompt_ids = [*prompt_ids, eos_id]  # T5's encoder inputs end with EOS
    _check_length(cfg, len(prompt_ids), args.max_new_tokens)
    if max(prompt_ids) >= cfg.vocab_size:
        raise UserError(f"{directory / TOKENIZER_FILE} produced id {max(prompt_ids)}, beyond the model's vocab_size "
                        f"({cfg.vocab_size}); the tokenizer is not the one the model was trained with")
    new_ids = generate(
        model, torch.tensor([prompt_ids]), args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, eos_id=eos_id, seed=args.seed,
        decoder_start_id=specials.pad_id if specials.pad_id is not None else 0,
    )[0].tolist()
    print(args.prompt + continuation(tokenizer, prompt_ids if cfg.arch == "gpt" else [], new_ids))
    return 0


def continuation(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text ``new_ids`` add after ``prompt_ids``: decoded in context, so word boundaries survive."""
    before = tokenizer.decode(prompt_ids)
    full = tokenizer.decode(prompt_ids + new_ids)
    return full[len(before):] if full.startswith(before) else tokenizer.decode(new_ids)
