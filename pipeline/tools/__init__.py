"""Command-line tools beside the pipeline's stages: comparisons, benchmarks, checks, prediction, the docs' blocks."""
