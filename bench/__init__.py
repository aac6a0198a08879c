"""Benchmarks: scripts that measure fgrpo and write bench/results/ (not part of the package)."""
