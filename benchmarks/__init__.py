"""Benchmarks of NuoNuo: recall quality on real data, speed and scale.

Each benchmark prints its figures beside the baselines measured in the same run.
"""
