"""Data only: the chart libraries `envctl runs report` inlines (see README.md here)."""
