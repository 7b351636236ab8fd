"""Command-line tools over the library, each `python -m pipeline.tools.<name>`: check (params and data before
`dvc repro`), predict, compare (seeds x variants through DVC experiments), the docs' generated blocks (docs),
and the benchmarks (bench*). They import the library; no library module imports them (tests/test_imports.py)."""
