"""The seed note's faiss example, against a running vecshard cluster instead of an in-process index.

Start a cluster first (`vecshard serve`), then: python examples/seed_example.py [ADDRESS]

Same workload as the note: 10,000 random 64-d vectors, 10 queries, k = 5; first exact search
(faiss IndexFlatL2 -> a FLAT collection), then IVF with nlist = 100 cells probed with nprobe = 10
(IndexIVFFlat -> an IVF_FLAT collection, trained once for all shards).
"""

from __future__ import annotations

import sys

import numpy as np

from vecshard import Client, NotFound

dimension = 64  # vector dimension
nb_vectors = 10000  # vectors in the data set
nb_queries = 10  # query vectors
k = 5  # neighbours per query


def run(address: str = "localhost:50051", seed: int = 0, verbose: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dataset = rng.random((nb_vectors, dimension)).astype("float32")
    queries = rng.random((nb_queries, dimension)).astype("float32")
    ids = np.arange(nb_vectors)

    with Client(address) as client:
        for name in ("seed_flat", "seed_ivf"):
            try:
                client.drop_collection(name)
            except NotFound:
                pass

        # Exact search (the note's IndexFlatL2).
        client.create_collection("seed_flat", dimension, metric="l2", index="flat")
        client.add("seed_flat", ids, dataset)
        print(f"data set size: {client.describe('seed_flat').count}") if verbose else None
        distances, indices = client.search("seed_flat", queries, k)

        # IVF search (the note's IndexIVFFlat, nlist = 100, nprobe = 10).
        client.create_collection("seed_ivf", dimension, metric="l2", index="ivf_flat", nlist=100, nprobe=10)
        client.add("seed_ivf", ids, dataset)
        client.train("seed_ivf")  # it would also train by itself at 39 * nlist vectors
        distances_ivf, indices_ivf = client.search("seed_ivf", queries, k)

    if verbose:
        for title, D, I in (("Flat", distances, indices), ("IVF", distances_ivf, indices_ivf)):
            print(f"\n{title} results:")
            for i in range(nb_queries):
                pairs = ", ".join(f"{I[i][j]} ({D[i][j]:.3f})" for j in range(k))
                print(f"  query {i}: {pairs}")
    return {
        "dataset": dataset,
        "queries": queries,
        "distances": distances,
        "indices": indices,
        "distances_ivf": distances_ivf,
        "indices_ivf": indices_ivf,
    }


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051")
