"""The benchmark report: one table of every figure in ``bench/results.json``.

    python bench/report.py [--markdown] [--results bench/results.json]

Columns: figure, raylm, anchor, ratio (raylm / anchor), goal, met. Missed goals are listed
under the table with how far they are missed. ``make bench`` runs this last; ``--markdown``
prints the same table for the README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import RESULTS, _fmt, read_results

COLUMNS = ("figure", "raylm", "anchor", "ratio", "goal", "met")


def _value(x, unit: str = "") -> str:
    if x is None:
        return "-"
    return f"{_fmt(x)} {unit}".strip()


def rows(results: dict) -> list[dict]:
    out = []
    for name, section in results.get("benchmarks", {}).items():
        for f in section.get("figures", []):
            anchor = _value(f.get("anchor"), f.get("unit", ""))
            if f.get("anchor") is not None and f.get("anchor_name"):
                anchor = f"{anchor} ({f['anchor_name']})"
            out.append({
                "benchmark": name, "figure": f["figure"], "raylm": _value(f.get("raylm"), f.get("unit", "")),
                "anchor": anchor, "ratio": "-" if f.get("ratio") is None else f"{f['ratio']:.2f}x",
                "goal": f.get("goal") or "-",
                "met": {True: "yes", False: "NO", None: "-"}[f.get("met")],
                "miss": f.get("miss", ""), "notes": f.get("notes", ""),
            })
    return out


def text_table(table: list[dict]) -> str:
    widths = {c: max([len(c)] + [len(r[c]) for r in table]) for c in COLUMNS}
    line = lambda r: "  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip()  # noqa: E731
    return "\n".join([line({c: c for c in COLUMNS}), line({c: "-" * widths[c] for c in COLUMNS})]
                     + [line(r) for r in table])


def markdown_table(table: list[dict]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(r[c].replace("|", "\\|") for c in COLUMNS) + " |" for r in table]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="a Markdown table (for the README)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = read_results(args.results)
    table = rows(results)
    if not table:
        print(f"no benchmark results in {args.results}; run `make bench`")
        return 1
    m = results.get("machine", {})
    print(f"raylm benchmarks, {results.get('updated', '?')}: {m.get('cpu', '?')}, {m.get('cpu_cores', '?')} cores, "
          f"{m.get('memory_gib', '?')} GiB, GPU: {m.get('gpu', '?')}; torch {m.get('torch', '?')}")
    print()
    print(markdown_table(table) if args.markdown else text_table(table))
    missed = [r for r in table if r["met"] == "NO"]
    met = sum(r["met"] == "yes" for r in table)
    print()
    print(f"goals: {met} met, {len(missed)} missed, {sum(r['met'] == '-' for r in table)} figures without a goal")
    for r in missed:
        print(f"  missed: {r['figure']}: {r['miss']}" + (f"; {r['notes']}" if r["notes"] else ""))
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
