"""Array-agnostic implementations: the fallback on every backend, the oracle of the fast paths."""
