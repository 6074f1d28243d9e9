"""Generated gRPC/protobuf code for vecshard.v1 (python proto/generate.py). Do not edit."""
