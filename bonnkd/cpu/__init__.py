"""CPU speed on the machine at hand: caches, autotune, XLA flags, oneDNN."""
