"""TensorRT-LLM 1.2.1's ``tensorrt_llm`` Triton model, whole, as its template declares it, and what its C++
backend does with a config beyond the names.

The data is ``tensorrt_llm_template.json`` beside this file: ``extract`` writes it from the contract facts
(``contracts/trtllm-1.2.json`` and ``contracts/template-corrections.json``, which are not installed with the
package) when ``scripts/refresh_contracts.sh`` runs, and a test fails when the two differ. Everything that renders
or imitates the ``tensorrt_llm`` model reads it from here: ``serving/repo.py`` renders every key, input and output
of it, and the engine stand-ins enforce the backend's rules (``backend``) on the same rendered config.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .tensors import TensorSpec

TEMPLATE_FILE = Path(__file__).with_name("tensorrt_llm_template.json")
_PLACEHOLDER = re.compile(r"^\$\{(\w+)\}$")
_LITERAL = "literal:"


@dataclass(frozen=True)
class TemplateParam:
    """One ``parameters`` entry: a key and what the template puts there, a ``${name}`` placeholder (unset until
    filled: the backend's own "unset") or a literal value."""

    key: str
    template_value: str

    @property
    def placeholder(self) -> str | None:
        """The placeholder's name (``batching_strategy`` for ``gpt_model_type``), None for a literal."""
        m = _PLACEHOLDER.match(self.template_value)
        return m.group(1) if m else None


@dataclass(frozen=True)
class BackendRules:
    """What the C++ backend does with a config and a request (``backend_behaviour`` in the facts)."""

    unguarded_reads: tuple[str, ...]  # parameter keys read with no fallback: absent, the model fails to load
    perf_outputs: tuple[str, ...]  # written to every response of a request that sets return_perf_metrics
    required_outputs: tuple[str, ...]  # a request must ask for these
    queue_full: str  # the executor's refusal past maxQueueSize, with {n} for the size

    def queue_full_message(self, max_queue_size: int) -> str:
        return self.queue_full.format(n=max_queue_size)

    def is_queue_full(self, message: str) -> bool:
        """Whether an error message is the executor's queue-full refusal (its text is the stable part)."""
        head, _, tail = self.queue_full.partition("{n}")
        return bool(re.search(re.escape(head) + r"\d+" + re.escape(tail), message or ""))


@dataclass(frozen=True)
class Template:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: tuple[TemplateParam, ...]
    instance_kind: str
    backend: BackendRules

    def input(self, name: str) -> TensorSpec:
        return next(s for s in self.inputs if s.name == name)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.parameters)


def _spec(row: dict) -> TensorSpec:
    reshape = row.get("reshape")
    return TensorSpec(row["name"], row["data_type"], tuple(row["dims"]), bool(row.get("optional", False)),
                      reshape=tuple(reshape) if reshape is not None else None,
                      allow_ragged_batch=bool(row.get("allow_ragged_batch", False)))


@lru_cache(maxsize=1)
def template() -> Template:
    d = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    m, b = d["model"], d["backend"]
    return Template(
        inputs=tuple(_spec(r) for r in m["inputs"]),
        outputs=tuple(_spec(r) for r in m["outputs"]),
        parameters=tuple(TemplateParam(p["key"], p["value"]) for p in m["parameters"]),
        instance_kind=m["instance_kind"],
        backend=BackendRules(tuple(b["unguarded_reads"]), tuple(b["perf_outputs"]), tuple(b["required_outputs"]),
                             b["queue_full"]),
    )


# --- writing the data from the contract facts (scripts/refresh_contracts.sh, and the test that compares) -------

def _names_in(text: str, names) -> list[str]:
    """The names that ``text`` mentions, in the order ``names`` has them."""
    return [n for n in names if re.search(rf"\b{re.escape(n)}\b", text)]


def extract(facts: dict, corrections: dict) -> dict:
    """The template and backend rules as this module stores them: the facts' ``tensorrt_llm`` model with the
    corrections' additions (ragged flags, keys), and ``backend_behaviour`` turned into lists."""
    model = facts["triton_models"]["models"]["tensorrt_llm"]
    fix = corrections["tensorrt_llm"]
    ragged = set(fix["allow_ragged_batch"])
    inputs = []
    for row in model["inputs"]:
        row = dict(row)
        if row["name"] in ragged:
            row["allow_ragged_batch"] = True
        inputs.append(row)
    params = [{"key": p["key"], "value": p["placeholder"].removeprefix(_LITERAL)} for p in model["parameters"]]
    for add in fix["parameters_added"]:
        at = next(i for i, p in enumerate(params) if p["key"] == add["after"]) + 1
        params.insert(at, {"key": add["key"], "value": add["placeholder"]})
    beh = facts["backend_behaviour"]
    out_names = [o["name"] for o in model["outputs"]]
    perf_fact = beh["perf_metrics_outputs"]["fact"]
    queue = re.search(r"'(Maximum queue size of )N( has been reached[^']*)'", beh["queue_full"]["fact"])
    return {
        "source": {"facts": facts["backend_behaviour"]["source"], "corrections": corrections["source"]},
        "model": {"inputs": inputs, "outputs": model["outputs"], "parameters": params,
                  "instance_kind": model["instance_group"]["kind"]},
        "backend": {
            "unguarded_reads": beh["parameters_must_exist"]["unguarded_reads"],
            "perf_outputs": _names_in(perf_fact.split(":", 1)[1], out_names),
            "required_outputs": _names_in(beh["outputs_required"].split("must")[0], out_names),
            "queue_full": queue.group(1) + "{n}" + queue.group(2),
        },
    }


def write(contracts_dir: str | Path) -> Path:
    c = Path(contracts_dir)
    facts = json.loads((c / "trtllm-1.2.json").read_text(encoding="utf-8"))
    corrections = json.loads((c / "template-corrections.json").read_text(encoding="utf-8"))
    TEMPLATE_FILE.write_text(json.dumps(extract(facts, corrections), indent=1, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    return TEMPLATE_FILE


if __name__ == "__main__":  # python -m ziya_trt.wire.trtllm_template CONTRACTS_DIR
    import sys

    print(f"wrote {write(sys.argv[1] if len(sys.argv) > 1 else 'contracts')}")
