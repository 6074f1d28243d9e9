"""The public VectorSearch API's handlers, one module per RPC family (the servicer in
coordinator/service.py only routes each RPC to its family)."""
