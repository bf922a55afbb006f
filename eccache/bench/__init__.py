"""Benchmarks (`eccache bench SUITE`): each measures its baselines in the same run and reports ratios."""
