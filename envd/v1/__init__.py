"""Generated gRPC stubs for envd.v1 (see scripts/gen_proto.py)."""
