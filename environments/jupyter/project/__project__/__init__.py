"""__project__: a nearest-centroid classifier in pandas, configured by params.yaml."""
