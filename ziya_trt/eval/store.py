"""A resumable run folder: ``run.json`` holds the options that decide the results (and the command line that set
them), ``items.jsonl`` one line per finished item, appended and flushed as each finishes. Running the same command
again reads the finished items and does only the rest; a run whose options differ is refused, naming them, so one
folder never mixes two settings. A line cut short by a kill is dropped (its item runs again).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from ..errors import ZiyaError

RUN_FILE, ITEMS_FILE = "run.json", "items.jsonl"


class EvalError(ZiyaError):
    """``ziya-trt eval`` cannot go on: bad options or data, or a run folder made with other options."""


class RunStore:
    def __init__(self, out: Path, kind: str, options: dict, command: list[str]):
        self.out, self.kind, self.options, self.command = Path(out), kind, options, command
        self._lock = threading.Lock()
        self.resumed = False

    def open(self) -> dict[str, dict]:
        """Check or write ``run.json``; the finished items by key."""
        self.out.mkdir(parents=True, exist_ok=True)
        run = self.out / RUN_FILE
        if run.exists():
            before = json.loads(run.read_text())
            if before.get("kind") != self.kind:
                raise EvalError(f"{self.out} holds an 'eval {before.get('kind')}' run, not 'eval {self.kind}'; "
                                "give another --out")
            old = before.get("options", {})
            changed = sorted(k for k in old.keys() | self.options.keys() if old.get(k) != self.options.get(k))
            if changed:
                shown = "; ".join(f"{k}: {old.get(k)!r} then, {self.options.get(k)!r} now" for k in changed)
                raise EvalError(f"{self.out} was started with other options ({shown}); rerun it with the same "
                                "options to continue, or give another --out")
            self.resumed = True
        else:
            run.write_text(json.dumps({"kind": self.kind, "options": self.options, "command": self.command},
                                      indent=1, ensure_ascii=False) + "\n")
        return self.finished()

    def finished(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        path = self.out / ITEMS_FILE
        if not path.exists():
            return out
        good = 0
        with path.open("rb") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    break  # cut short by a kill: this item and nothing after it counts
                out[row["key"]] = row
                good += len(line)
        if good != path.stat().st_size:
            with path.open("r+b") as f:
                f.truncate(good)
        return out

    def append(self, row: dict) -> None:
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode()
        with self._lock, (self.out / ITEMS_FILE).open("ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
