"""Model families, each written once on the backend op set; each package declares its `FAMILY`
(models/base.py). The one list of built-in families, in `polyasr models list` order:"""

FAMILIES = ("whisper", "gigaam", "parakeet", "qwen3_asr", "qwen3_forced_aligner")
