"""__project__: a small PyTorch classifier, configured by params.yaml."""
