"""The 1-bit primitives: sign + STE, the binary conv layer, BONN's losses."""
