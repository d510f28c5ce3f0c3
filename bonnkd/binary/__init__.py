"""The 1-bit primitives: quantizers (sign + STE), the binary conv layer, BONN's losses."""
