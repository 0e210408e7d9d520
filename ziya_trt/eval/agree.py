"""``ziya-trt eval agree``: the same prompts greedily through a served engine and through transformers on the
checkpoint; token by token, how far they agree and how close their log probabilities are.

Both sides start from the same ids: the checkpoint's tokenizer and the template format the conversation here
(``encode_prompt``), as the server's chat route does, and the response's ``usage.prompt_tokens`` must equal their
count (else the item is refused as set up wrongly: most likely ``--template`` is not the server's). The served
tokens are compared to transformers' by their bytes (``api.py`` says why), their log probabilities position by
position over the prefix where the tokens agree.

Where the text ends: transformers stops at the end-of-sequence id, the server at it or at one of the template's
stop strings (whose tokens it does not send). A served answer that ends early matches when the reference's text
from that point starts the stop string (or the reference ended there too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import errors as E
from ..text.prompt import Message, Role, encode_prompt, get_template
from . import stats
from .api import ChatAPI, is_refusal
from .data import AgreePrompt, agree_prompts
from .store import EvalError, RunStore


@dataclass(frozen=True)
class AgreeConfig:
    url: str  # the OpenAI-compatible API's base URL (…/v1)
    model_dir: Path  # the checkpoint transformers loads (its tokenizer too)
    out: Path
    model: str = "ziya"
    template: str = "auto"
    dtype: str = "float32"
    device: str = "auto"
    max_tokens: int = 32
    prompts: Path | None = None
    min_match: float | None = None
    max_logprob_diff: float | None = None  # on the p95 of |Δ log p|
    api_key: str | None = None
    timeout_s: float = 300.0

    def __post_init__(self):
        if self.max_tokens < 1:
            raise EvalError("--max-tokens: must be at least 1")
        if self.min_match is not None and not 0.0 <= self.min_match <= 1.0:
            raise EvalError("--min-match: a rate between 0 and 1")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise EvalError("--ref-dtype: float32, bfloat16 or float16")
        if not (Path(self.model_dir) / "config.json").is_file():
            raise EvalError(f"--model-dir {self.model_dir}: no config.json; a transformers checkpoint is needed")

    def options(self) -> dict:
        """What decides the results (a resumed run must have the same)."""
        return {"url": self.url, "model": self.model, "model_dir": str(self.model_dir), "template": self.template,
                "ref_dtype": self.dtype, "max_tokens": self.max_tokens,
                "prompts": str(self.prompts) if self.prompts else "bundled"}


# --- one prompt ------------------------------------------------------------------------------------------------
def _rest_starts_stop(last: bytes, rest: bytes, stops: tuple[str, ...]) -> bool:
    """The reference's text from where the served one ended starts one of the stop strings (the stop string may
    begin inside the last served token, which the server then also sent)."""
    joined = (last + rest).decode("utf-8", "replace")
    n_last = len(last.decode("utf-8", "replace"))
    return any(0 <= joined.find(s) <= n_last and joined.find(s) + len(s) >= n_last for s in stops if s)


def compare(served: list[bytes], served_lps: list[float], served_finish: str | None,
            ref: list[bytes], ref_lps: list[float], ref_ended: bool, stops: tuple[str, ...]) -> dict:
    """One prompt's agreement: ``first_divergence`` (None: none), ``match``, and each matched position's
    served - reference log probability."""
    k = min(len(served), len(ref))
    first = next((i for i in range(k) if served[i] != ref[i]), None)
    if first is None and len(served) != len(ref):
        if len(served) < len(ref):  # the server ended first: at a stop string where the reference goes on to it
            early_stop = served_finish == "stop" and stops and _rest_starts_stop(
                served[-1] if served else b"", b"".join(ref[len(served):]), stops)
            first = None if early_stop else len(served)
        else:  # the reference ended (end-of-sequence) and the server went on
            first = len(ref)
    if first is None and len(served) == len(ref) and ref_ended != (served_finish == "stop"):
        first = len(served)  # same tokens, but one side ended there and the other ran out of tokens
    upto = k if first is None else min(first, k)
    diffs = [s - r for s, r in zip(served_lps[:upto], ref_lps[:upto])]
    return {"match": first is None, "first_divergence": first, "compared": k, "logprob_diffs": diffs}


class Reference:
    """transformers' ``generate`` on the checkpoint, greedy, no penalty: the model's own answer."""

    def __init__(self, model_dir: Path, dtype: str, device: str, eos_id: int):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval()
        self.eos_id = eos_id

    def greedy(self, ids: list[int], n: int) -> tuple[list[int], list[float], bool]:
        """Up to ``n`` tokens (without the end-of-sequence id), each one's log-softmax over the vocabulary, and
        whether it ended at end-of-sequence."""
        torch = self.torch
        x = torch.tensor([ids], device=self.device)
        with torch.inference_mode():
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                                      repetition_penalty=1.0, eos_token_id=self.eos_id, pad_token_id=self.eos_id,
                                      output_logits=True, return_dict_in_generate=True)
        tokens = out.sequences[0, len(ids):].tolist()
        lps = [float(torch.log_softmax(lg[0].float(), -1)[t]) for lg, t in zip(out.logits, tokens)]
        if self.eos_id in tokens:
            cut = tokens.index(self.eos_id)
            return tokens[:cut], lps[:cut], True
        return tokens, lps, False


def pick_template(name: str, tok) -> str:
    if name != "auto":
        return name
    return "chat_template" if tok.chat_template and tok.special.human is None else "ziya"


def _messages(p: AgreePrompt) -> list[Message]:
    return [Message(Role(m["role"]), m["content"]) for m in p.messages]


def run_one(p: AgreePrompt, api: ChatAPI, ref: Reference, tok, template, max_tokens: int) -> dict:
    row = {"key": p.id, "id": p.id, "kind": p.kind}
    ids = list(encode_prompt(_messages(p), template, tok).ids)
    row["prompt_tokens"] = len(ids)
    try:
        ans = api.chat(list(p.messages), max_tokens, logprobs=True)
    except E.ZiyaError as e:
        if is_refusal(e):
            return row | {"skipped": f"the server refused it: {e.message}"}
        raise
    if ans.prompt_tokens != len(ids):
        return row | {"skipped": f"the server's prompt has {ans.prompt_tokens} tokens, this side's {len(ids)}: "
                                 "give the server's --template"}
    ref_ids, ref_lps, ended = ref.greedy(ids, max_tokens)
    ref_bytes = [tok.table.token_bytes(t) for t in ref_ids]
    cmp = compare(ans.tokens, ans.logprobs, ans.finish_reason, ref_bytes, ref_lps, ended, template.stop_strings)
    return row | cmp | {
        "served": {"tokens": [b.hex() for b in ans.tokens], "logprobs": ans.logprobs, "finish": ans.finish_reason,
                   "text": ans.text},
        "reference": {"ids": ref_ids, "logprobs": ref_lps, "ended": ended,
                      "text": b"".join(ref_bytes).decode("utf-8", "replace")},
    }


# --- the run ---------------------------------------------------------------------------------------------------
def summarize(rows: list[dict], max_tokens: int) -> dict:
    done = [r for r in rows if "skipped" not in r]
    firsts = [r["first_divergence"] for r in done if r["first_divergence"] is not None]
    diffs = [d for r in done for d in r["logprob_diffs"]]
    kinds: dict[str, dict] = {}
    for r in done:
        k = kinds.setdefault(r["kind"], {"prompts": 0, "matched": 0})
        k["prompts"] += 1
        k["matched"] += r["match"]
    n = len(done)

    def identical_through(pos: int) -> float:  # prompts whose first `pos` tokens agree (or that ended agreeing)
        return sum(1 for r in done if r["first_divergence"] is None or r["first_divergence"] >= pos) / n

    return {
        "prompts": len(rows), "compared": n, "skipped": [{"id": r["id"], "why": r["skipped"]} for r in rows
                                                           if "skipped" in r],
        "max_tokens": max_tokens,
        "exact_match_rate": sum(r["match"] for r in done) / n if n else None,
        "first_token_match_rate": identical_through(1) if n else None,
        "identical_through": [identical_through(k) for k in range(1, max_tokens + 1)] if n else [],
        "by_kind": kinds,
        "first_divergence": {"positions": sorted(firsts), **stats.summary(firsts)},
        "logprob_diff": {"signed_mean": stats.summary(diffs)["mean"],
                         "abs": stats.summary(abs(d) for d in diffs)},
    }


def verdict(summary: dict, cfg: AgreeConfig) -> list[str]:
    """The thresholds the run misses (empty: it passes)."""
    out = []
    rate = summary["exact_match_rate"]
    if cfg.min_match is not None and (rate is None or rate < cfg.min_match):
        out.append(f"exact-match rate {rate} is under --min-match {cfg.min_match}")
    p95 = summary["logprob_diff"]["abs"]["p95"]
    if cfg.max_logprob_diff is not None and p95 is not None and p95 > cfg.max_logprob_diff:
        out.append(f"p95 |Δ log p| {p95:.3g} is over --max-logprob-diff {cfg.max_logprob_diff:g}")
    return out


def run_agree(cfg: AgreeConfig, command: list[str], console, plots: bool = True) -> tuple[dict, list[str]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..text.tokenizer import load_tokenizer
    from . import report

    tok = load_tokenizer(cfg.model_dir, require_chat_tokens=False)
    template_name = pick_template(cfg.template, tok)
    template = get_template(template_name, tok)
    prompts = agree_prompts(cfg.prompts)
    store = RunStore(cfg.out, "agree", cfg.options(), command)
    done = store.open()
    todo = [p for p in prompts if p.id not in done]
    if store.resumed:
        report.say(console, f"resuming {cfg.out}: {len(done)} of {len(prompts)} prompts done")
    t0 = time.time()
    if todo:
        api = ChatAPI(cfg.url, cfg.model, cfg.api_key, cfg.timeout_s)
        report.say(console, f"loading the reference: transformers on {cfg.model_dir} ({cfg.dtype}) ...")
        ref = Reference(cfg.model_dir, cfg.dtype, cfg.device, tok.eos_id)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("agree", total=len(prompts), completed=len(done))
            for p in todo:
                store.append(run_one(p, api, ref, tok, template, cfg.max_tokens))
                progress.advance(task)
    finished = store.finished()
    rows = [finished[p.id] for p in prompts if p.id in finished]
    summary = summarize(rows, cfg.max_tokens)
    misses = verdict(summary, cfg)
    doc = {"kind": "agree", "command": command, "time": report.now(), "seconds_this_run": round(time.time() - t0, 1),
           "options": cfg.options() | {"template_used": template_name, "min_match": cfg.min_match,
                                       "max_logprob_diff": cfg.max_logprob_diff},
           "versions": report.versions(), "summary": summary, "pass": not misses, "misses": misses,
           "items": [{k: r.get(k) for k in ("id", "kind", "prompt_tokens", "match", "first_divergence", "skipped")}
                     for r in rows]}
    files = [report.write_json(cfg.out / "results.json", doc)]
    if plots:
        files += report.plot_agree(cfg.out, summary, console)
    report.print_agree(doc, console, rows)
    report.say(console, "wrote " + ", ".join(str(f) for f in files))
    return doc, misses
