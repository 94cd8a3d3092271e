"""One module per group of subcommands; each imports grpc only when it runs."""
