"""envd's own dummy package (repo2docker's test imports `dummy`)."""
