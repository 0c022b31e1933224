"""The benchmark table's row and how it prints: shared by `python -m benchmarks` and the
scripts that print their own rows."""

from __future__ import annotations

Row = tuple[str, str, float | None, str, str]  # name, measure, ratio, goal, met


def print_table(rows: list[Row]) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"| {'benchmark':<{w0}} | {'measure':<{w1}} | ratio  | goal               | met? |")
    print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|--------|--------------------|------|")
    for name, measure, ratio, goal, met in rows:
        r = f"{ratio:6.3f}" if ratio is not None else "     -"
        print(f"| {name:<{w0}} | {measure:<{w1}} | {r} | {goal:<18} | {met} |")
