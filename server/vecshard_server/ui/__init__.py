"""The web dashboard (`vecshard serve --ui-port`): cluster, collections, points and searches, metrics.

It runs inside the coordinator's process and reads everything through the coordinator's public
gRPC API with the API key of the browser (docs/dashboard.md)."""
