"""__project__: a scikit-learn classifier, configured by params.yaml."""
