"""``raylm tokenize``: build (or reuse) the token dataset a config describes, with Ray Data."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  raylm tokenize                                   # the stdlib corpus, a BPE tokenizer, train.seq_len
  raylm tokenize jobs/configs/gpt_tiny.yaml --data.max_docs 200
  raylm tokenize --data.corpus 'books/**/*.txt' --data.tokenizer wordpiece --model.vocab_size 16000
  raylm tokenize --data.corpus s3://bucket/c4/ --data.format jsonl --data.text_field text

The dataset goes to <data.shards_dir>/<key>/ (manifest.json, tokenizer.json, train/ and val/
Parquet shards); a second run on the same inputs and settings reuses it. With no RAY_ADDRESS
a local Ray starts."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tokenize",
        help="tokenize and pack a corpus into Parquet token shards (Ray Data)",
        description="Read data.corpus, train or load the tokenizer, tokenize in parallel with Ray Data, pack "
        "train.seq_len + 1 token blocks and write Parquet shards plus manifest.json. Overrides: --section.key VALUE.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", help="YAML config file (defaults only when omitted)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a dataset for these inputs exists")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=_tokenize, accepts_overrides=True)


def _tokenize(args: argparse.Namespace) -> int:
    from raylm.config_load import load_config, parse_override_args
    from raylm.data.pipeline import quiet_log, stderr_log
    from raylm.data.prepare import prepare_dataset

    config = load_config(args.file, parse_override_args(args.overrides))
    prepared = prepare_dataset(config, force=args.force, log=quiet_log if args.quiet else stderr_log)
    summary = summarize(prepared)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def summarize(prepared) -> dict:
    """The facts a user wants after a run: where the dataset is and what it holds."""
    manifest = prepared.manifest
    return {
        "directory": str(prepared.directory),
        "reused": prepared.reused,
        "seq_len": manifest.seq_len,
        "tokenizer": {k: manifest.tokenizer[k] for k in ("source", "vocab_size", "sha256")},
        "invalid_utf8_replacements": manifest.invalid_utf8_replacements,
        "splits": {
            name: {k: getattr(info, k) for k in ("documents", "stream_tokens", "sequences", "tokens", "dropped_tokens")}
            for name, info in manifest.splits.items()
        },
    }


def format_summary(summary: dict) -> str:
    tok = summary["tokenizer"]
    lines = [
        f"dataset: {summary['directory']}{' (reused)' if summary['reused'] else ''}",
        f"tokenizer: {tok['source']}, {tok['vocab_size']} tokens, sha256 {tok['sha256'][:12]}",
    ]
    for name, s in summary["splits"].items():
        lines.append(
            f"{name}: {s['documents']:,} documents, {s['stream_tokens']:,} tokens -> {s['sequences']:,} sequences "
            f"of {summary['seq_len']} + 1 ({s['dropped_tokens']:,} tail tokens dropped)"
        )
    lines.append(f"invalid UTF-8 replacements: {summary['invalid_utf8_replacements']:,}")
    return "\n".join(lines)
