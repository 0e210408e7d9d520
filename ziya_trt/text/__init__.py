"""The text core, with no I/O: Ziya's chat format and truncation (``prompt``), the tokenizer
(``tokenizer``), the streaming detokeniser and stop strings (``detok``), and sampling settings
with the model card's defaults (``sampling``)."""
