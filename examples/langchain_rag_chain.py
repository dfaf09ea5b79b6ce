"""Answer questions over notes with NuoNuoRetriever in an LCEL chain.

The retriever takes the place of ``vectorstore.as_retriever()`` in the usual
``retriever | format_docs | prompt | model`` chain. With ``--hops 2`` it also
returns notes linked to the direct hits, and the script prints each retrieved
note with its association path.

Runs offline by default, with a small fake chat model that quotes the context.
To use a local Ollama model instead (needs ``pip install langchain-ollama`` and
``ollama serve`` on this machine)::

    python examples/langchain_rag_chain.py --model ollama:llama3.2
    NUONUO_CHAT_MODEL=ollama:llama3.2 python examples/langchain_rag_chain.py
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any
from urllib.parse import urlparse

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from nuonuo_core import HashingEmbedder
from nuonuo_langchain import NuoNuoRetriever

NOTES = [
    "My dog is called Max.",
    "Max loves running on the beach at Matosinhos.",
    "I work as a nurse at the Santo Antonio hospital in Porto.",
    "My sister Rita plays the violin in the city orchestra.",
    "We booked a flight to Tokyo for the second week of May.",
    "I am allergic to peanuts.",
    "The kitchen was painted yellow last spring.",
    "Rita's concert is on the first Saturday of June.",
]

QUESTIONS = [
    "Tell me about my dog.",
    "When can I hear my sister play?",
    "What should I avoid eating?",
]

OLLAMA_URL = "http://127.0.0.1:11434"


class ContextQuotingChatModel(BaseChatModel):
    """A fake chat model that answers by quoting the context lines of its prompt."""

    @property
    def _llm_type(self) -> str:
        return "context-quoting-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = messages[-1].text
        context = prompt.split("Context:\n", 1)[-1].split("\n\nQuestion:", 1)[0]
        answer = "From your notes: " + " ".join(line.lstrip("- ") for line in context.splitlines())
        return ChatResult(generations=[ChatGeneration(message=AIMessage(answer))])


def load_chat_model(choice: str) -> BaseChatModel:
    """Return the fake model, or a local Ollama model for ``ollama:<name>``."""
    if choice == "fake":
        return ContextQuotingChatModel()
    if not choice.startswith("ollama:"):
        sys.exit(f"invalid --model {choice!r}: expected 'fake' or 'ollama:<model name>'")
    try:
        from langchain_ollama import ChatOllama
    except ImportError:
        sys.exit("--model ollama:... needs langchain-ollama: pip install langchain-ollama")
    address = urlparse(OLLAMA_URL)
    try:
        socket.create_connection((address.hostname, address.port), timeout=2).close()
    except OSError as error:
        sys.exit(f"no Ollama server at {OLLAMA_URL} ({error}); start it with 'ollama serve'")
    return ChatOllama(model=choice.split(":", 1)[1], base_url=OLLAMA_URL, temperature=0)


def format_docs(documents: list[Document]) -> str:
    return "\n".join(f"- {document.page_content}" for document in documents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("NUONUO_CHAT_MODEL", "fake"),
                        help="'fake' (default, offline) or 'ollama:<model name>'; "
                             "the environment variable NUONUO_CHAT_MODEL sets the default")
    parser.add_argument("--k", type=int, default=3, help="notes retrieved per question (default 3)")
    parser.add_argument("--hops", type=int, default=2, help="1 is single-hop recall; 2 follows links (default 2)")
    parser.add_argument("--hashing", action="store_true",
                        help="embed with the model-free HashingEmbedder instead of all-MiniLM-L6-v2")
    args = parser.parse_args()
    model = load_chat_model(args.model)

    # The retriever stores the notes. Consecutive notes are not linked here,
    # but notes that share a rare name ("Max", "Rita") are.
    embedder = HashingEmbedder() if args.hashing else None
    retriever = NuoNuoRetriever.from_texts(NOTES, embedder=embedder, k=args.k, hops=args.hops)
    text_of = {record.id: record.text for record in retriever.memory.list(())}

    prompt = ChatPromptTemplate.from_messages([(
        "human",
        "Answer the question in one sentence, using only the context.\n\n"
        "Context:\n{context}\n\nQuestion: {question}",
    )])
    chain = (
        {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()}
        | prompt
        | model
        | StrOutputParser()
    )

    for question in QUESTIONS:
        print(f"\nQuestion: {question}")
        for document in retriever.invoke(question):
            path = " -> ".join(repr(text_of[memory_id]) for memory_id in document.metadata["path"])
            print(f"  score {document.metadata['score']:.3f}  hops {document.metadata['hops']}  {path}")
        print(f"Answer: {chain.invoke(question)}")


if __name__ == "__main__":
    main()
