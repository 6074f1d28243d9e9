"""Server-side embeddings: a registry of models (sentence-transformers, CLIP, DINO) loaded lazily
from local directories, run in-process by a coordinator or by a separate `vecshard embedder`."""
