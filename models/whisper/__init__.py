"""Whisper (any size, tiny ... large-v3-turbo) from HF-transformers or CTranslate2 checkpoints."""
