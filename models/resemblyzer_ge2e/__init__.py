"""Resemblyzer's GE2E voice encoder (a speaker-embedding network, not an ASR family): 40-bin mel
power frames -> 3-layer LSTM -> linear + ReLU -> L2 norm, on backend ops; its weights are the
`resemblyzer` package's `pretrained.pt`. Public surface: `polyasr.diarize`."""
