"""What the ``tensorrt_llm`` C++ backend does with its config and its requests, enforced by the engine stand-ins on
the config they were loaded with (the same rendered ``tensorrt_llm`` config, only the backend swapped to python).

A config or a request that the backend on a GPU would refuse fails here too, with the backend's own words:
- a parameter key of the template that is missing: the model does not load (``ModelState::GetParameter`` throws
  ``Cannot find parameter with name: KEY``; three keys are read with no fallback);
- a request that does not ask for ``output_ids`` and ``sequence_length``;
- a request that sets ``return_perf_metrics`` while the config does not declare all ten perf outputs: the backend
  writes them to every response, Triton refuses an undeclared one, and the request ends with that error;
- a batch whose ``input_lengths`` is not 1-D (``wire.arrays.split_batch``), and a full queue
  (``engine.loop``: the executor's ``Maximum queue size of N has been reached``);
- guided decoding (contracts/guided-decoding.json): off when ``guided_decoding_backend`` or
  ``xgrammar_tokenizer_info_path`` is empty or its placeholder; on, the backend must be ``xgrammar`` and the tokenizer
  info file must exist with its three keys, or the model does not load (``guided_tokenizer_info``). Stricter than
  the backend, the stand-ins refuse a guided request while it is off and a guide type it does not map (it would run
  such a request unguided, without a word: ``engine.request.validate``, ``ReferenceEngine``).
The rules come from ``wire/trtllm_template.py`` (the facts in ``contracts/``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BackendError
from ...wire.trtllm_template import template
from ..config import ConfigError


@dataclass(frozen=True)
class LoadedModel:
    """The parts of a loaded model's config the backend's rules look at."""

    name: str
    keys: frozenset[str]  # parameter keys present
    outputs: frozenset[str]  # outputs declared
    values: dict[str, str] = field(default_factory=dict)  # parameter values

    @classmethod
    def from_model_config(cls, model_config: str | dict) -> "LoadedModel":
        """From Triton's JSON form of the config (``args["model_config"]`` in a Python model's ``initialize``)."""
        d = json.loads(model_config) if isinstance(model_config, str) else model_config
        params = d.get("parameters") or {}
        values = {k: (v.get("string_value", "") if isinstance(v, dict) else str(v)) for k, v in params.items()}
        return cls(d.get("name", ""), frozenset(params), frozenset(o["name"] for o in d.get("output") or ()), values)

    @property
    def guided_tokenizer_info(self) -> Path | None:
        """The xgrammar tokenizer info file when guided decoding is on (the backend's rule), else None."""
        backend = self.values.get("guided_decoding_backend", "")
        path = self.values.get("xgrammar_tokenizer_info_path", "")
        if _unset(backend, "guided_decoding_backend") or _unset(path, "xgrammar_tokenizer_info_path"):
            return None
        return Path(path)

    def check_guided(self) -> None:
        """Refuse to load as the backend would with guided decoding on: only the xgrammar backend, and a tokenizer info
        file that exists with encoded_vocab, tokenizer_str and stop_token_ids."""
        path = self.guided_tokenizer_info
        if path is None:
            return
        if not path.exists():
            raise ConfigError(f"{self.name}: Xgrammar's tokenizer info path at {path} does not exist.")
        from ...engine.guided import read_tokenizer_info

        try:
            read_tokenizer_info(path)
        except ValueError as e:
            raise ConfigError(f"{self.name}: {e}") from None
        if self.values["guided_decoding_backend"] != "xgrammar":
            raise ConfigError(f"{self.name}: Guided decoding is currently supported with 'xgrammar' backend. Invalid "
                              "guided_decoding_backend parameter provided.")

    def check_load(self) -> None:
        """Refuse to load as the backend would: every parameter key of the template must be in the config."""
        missing = [k for k in template().keys if k not in self.keys]
        if missing:
            unguarded = [k for k in template().backend.unguarded_reads if k in missing]
            raise ConfigError(
                f"{self.name}: Cannot find parameter with name: {missing[0]} ({len(missing)} template key(s) missing: "
                f"{', '.join(missing)}; read with no fallback: {', '.join(unguarded) or 'none of them'}). Render the "
                "whole template: a key left unset keeps its ${...} placeholder")
        self.check_guided()

    def check_request(self, wanted: set[str] | None, perf_metrics: bool) -> None:
        """Refuse a request the backend could not answer (``wanted``: the outputs asked for; None: all)."""
        for name in template().backend.required_outputs:
            if wanted is not None and name not in wanted:
                raise BackendError(f"Error encountered while populating response: {name} tensor must be present in "
                                   "list of output tensors")
        if perf_metrics:
            undeclared = [n for n in template().backend.perf_outputs if n not in self.outputs]
            if undeclared:
                raise BackendError(f"Error encountered while populating response: unexpected inference output "
                                   f"'{undeclared[0]}' for model '{self.name}'")


def _unset(value: str, key: str) -> bool:
    return not value or value == "${" + key + "}"
