"""CPU speed, measured on the machine at hand: machine key, conv autotune, XLA flags, step timing, oneDNN convolutions."""
