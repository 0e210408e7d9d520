"""``ziya-trt eval``: does a served engine still answer as the model does?

- ``agree`` (``agree.py``): the bundled bilingual prompts greedily through the served engine and through transformers
  on the checkpoint; exact match of the first tokens, where they first differ, and the log-probability differences.
- ``bench`` (``bench.py``): multiple-choice accuracy (C-Eval, CMMLU, MMLU) through the served API; two engines on
  the same items side by side, with a paired bootstrap interval and the items where they disagree.

Both write a resumable run folder (``store.py``), a results.json and a plot (``report.py``); the numbers are
``stats.py``'s, the items ``data.py``'s.
"""
