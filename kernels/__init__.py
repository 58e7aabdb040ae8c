"""Hand-written kernels, one file per op, each beside its plain-torch reference."""
