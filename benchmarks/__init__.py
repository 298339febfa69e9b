"""Benchmarks of `research` against the reference notebook workflow.

`python -m benchmarks` runs every benchmark and rewrites docs/benchmarks.md;
`python -m benchmarks --only training_loop` runs one. Each benchmark stores its
result in benchmarks/results/<name>.json, and the page is built from all stored
results, so running one benchmark updates its own section only.
"""
