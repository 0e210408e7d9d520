"""Load generation, metrics, reports, plots and microbenchmarks for Triton LLM endpoints."""
