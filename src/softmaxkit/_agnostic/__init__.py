"""Array-agnostic implementations: the fallback for every backend and the oracle of the fast paths."""
