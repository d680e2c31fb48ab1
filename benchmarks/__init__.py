"""Hapax benchmarks: the gateway against a bare grpc.aio floor in the same run, and the
measurements behind the upstream HTTP client and event loop choices.

`python -m benchmarks` runs everything (see benchmarks/README.md); `--quick` for a smoke run.
"""
