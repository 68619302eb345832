"""deltaport benchmark harness (run with: python bench/run.py --help)."""
