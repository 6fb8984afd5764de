"""Reference transformers in pure NumPy on real published weights."""
