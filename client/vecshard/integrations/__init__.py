"""vecshard under application frameworks: LangChain, LlamaIndex and Haystack.

Each framework has its own module, imported by name (this package imports none of them, so the SDK
works without any framework installed):

- `vecshard.integrations.langchain`: `VecshardVectorStore`, a langchain-core VectorStore
  (`pip install "vecshard[langchain]"`);
- `vecshard.integrations.llama_index`: `VecshardVectorStore`, a llama-index BasePydanticVectorStore
  (`pip install "vecshard[llama-index]"`);
- `vecshard.integrations.haystack`: `VecshardDocumentStore` and the retriever components
  `VecshardEmbeddingRetriever`, `VecshardBM25Retriever` and `VecshardHybridRetriever`
  (`pip install "vecshard[haystack]"`).

All three keep a document the same way, so a collection written through one can be read through
another: a string-id collection whose points hold the text under the payload key "text" (searched
by keyword through a "text" payload index) and the metadata under "metadata". Either the framework
embeds (the collection then holds its vectors), or the collection is bound to a server model
(`model="minilm"`) and the server embeds texts and queries. docs/integrations.md has an example of
each.
"""

from __future__ import annotations

__all__: list[str] = []
