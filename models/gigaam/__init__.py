"""GigaAM v3 (Conformer + CTC, Russian): checkpoint readers, config, network and loader."""
