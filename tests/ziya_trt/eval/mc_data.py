"""Small multiple-choice sets written in the layouts C-Eval, CMMLU and MMLU ship in (what ``modelscope download``
or a git clone leaves), for the tests."""

from __future__ import annotations

import csv
from pathlib import Path

LETTERS = "ABCD"


def _question(task: str, subject: str, i: int) -> tuple[str, list[str], str]:
    a, b = 2 + i, 3 + (i % 4)
    right = a + b
    opts = [right + d for d in (0, 1, -1, 2)]
    k = i % 4
    opts[0], opts[k] = opts[k], opts[0]
    q = f"{a} 加 {b} 等于多少？" if task != "mmlu" else f"What is {a} plus {b}?"
    return q, [str(o) for o in opts], LETTERS[k]


def write_sets(root: Path, n: int = 6, subjects=("arithmetic", "counting")) -> Path:
    for task in ("ceval", "cmmlu", "mmlu"):
        for split in ({"ceval": "val", "cmmlu": "test", "mmlu": "test"}[task], "dev"):
            d = root / task / split
            d.mkdir(parents=True, exist_ok=True)
            for subject in subjects:
                name = f"{subject}.csv" if task == "cmmlu" else f"{subject}_{split}.csv"
                with (d / name).open("w", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    if task == "ceval":
                        w.writerow(["id", "question", "A", "B", "C", "D", "answer"])
                    elif task == "cmmlu":
                        w.writerow(["", "Question", "A", "B", "C", "D", "Answer"])
                    for i in range(n if split != "dev" else 3):
                        q, opts, ans = _question(task, subject, i + (100 if split == "dev" else 0))
                        w.writerow([i, q, *opts, ans] if task != "mmlu" else [q, *opts, ans])
    return root
