"""envctl: the command line of envd. A thin client: parses, calls the daemon, prints."""
