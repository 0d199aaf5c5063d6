"""Helpers shared by the tests and the benchmarks (bench/ never imports tests/): tiny models, git repositories,
the headless browser. Development only: not part of the installed package."""
