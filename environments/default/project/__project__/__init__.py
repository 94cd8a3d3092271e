"""__project__: train and evaluate a small classifier, configured by params.yaml."""
