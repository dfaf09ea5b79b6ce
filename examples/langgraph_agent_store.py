"""Give a LangChain agent long-term memory with NuoNuoStore as its LangGraph store.

The agent gets two tools that read and write the store through
``runtime.store``: one saves a fact, the other searches the saved facts by
meaning. NuoNuoStore takes the place of ``InMemoryStore`` or a database store
in ``create_agent(..., store=...)``. With ``--hops 2`` a search also returns
facts linked to the direct hits, such as facts that name the same pet.

Runs offline by default, with a small rule-based fake chat model that calls the
tools. With ``--path store.db`` the facts are kept in a file between runs. To
use a local Ollama model instead (needs ``pip install langchain-ollama`` and
``ollama serve`` on this machine, and a model that supports tool calling)::

    python examples/langgraph_agent_store.py --model ollama:llama3.2
    NUONUO_CHAT_MODEL=ollama:llama3.2 python examples/langgraph_agent_store.py
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import uuid
from typing import Any
from urllib.parse import urlparse

from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

from nuonuo_core import HashingEmbedder
from nuonuo_langchain import NuoNuoStore

NAMESPACE = ("memories", "ana")

REQUESTS = [
    "Remember that my dog is called Max.",
    "Remember that Max loves running on the beach at Matosinhos.",
    "Remember that I am allergic to peanuts.",
    "Remember that my sister Rita plays the violin.",
    "Tell me about my dog.",
    "Is there any food I should avoid?",
]

SYSTEM_PROMPT = (
    "You help Ana. Save every fact she asks you to remember with save_memory, and "
    "call search_memory before answering a question about her."
)

OLLAMA_URL = "http://127.0.0.1:11434"


@tool
def save_memory(fact: str, runtime: ToolRuntime) -> str:
    """Save a fact about the user for future conversations."""
    runtime.store.put(NAMESPACE, uuid.uuid4().hex, {"text": fact})
    return f"Saved: {fact}"


@tool
def search_memory(query: str, runtime: ToolRuntime) -> str:
    """Search the saved facts about the user by meaning."""
    items = runtime.store.search(NAMESPACE, query=query, limit=3)
    if not items:
        return "Nothing saved yet."
    return "\n".join(f"{item.value['text']} (score {item.score:.2f})" for item in items)


class RuleBasedToolModel(BaseChatModel):
    """A fake chat model for agents: "Remember that ..." calls save_memory, any other
    request calls search_memory, and a tool result becomes the reply."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> RuleBasedToolModel:
        return self

    @property
    def _llm_type(self) -> str:
        return "rule-based-tool-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            message = AIMessage(f"Done. {last.text}" if last.name == "save_memory" else f"From memory:\n{last.text}")
        else:
            request = last.text
            if request.lower().startswith("remember that "):
                fact = request[len("remember that "):]
                call = {"name": "save_memory", "args": {"fact": fact[:1].upper() + fact[1:]}}
            else:
                call = {"name": "search_memory", "args": {"query": request}}
            message = AIMessage("", tool_calls=[{**call, "id": f"call-{len(messages)}"}])
        return ChatResult(generations=[ChatGeneration(message=message)])


def load_chat_model(choice: str) -> BaseChatModel:
    """Return the fake model, or a local Ollama model for ``ollama:<name>``."""
    if choice == "fake":
        return RuleBasedToolModel()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("NUONUO_CHAT_MODEL", "fake"),
                        help="'fake' (default, offline) or 'ollama:<model name>'; "
                             "the environment variable NUONUO_CHAT_MODEL sets the default")
    parser.add_argument("--path", help="SQLite file that keeps the saved facts between runs")
    parser.add_argument("--hops", type=int, default=2, help="1 is single-hop recall; 2 follows links (default 2)")
    parser.add_argument("--hashing", action="store_true",
                        help="embed with the model-free HashingEmbedder instead of all-MiniLM-L6-v2")
    args = parser.parse_args()
    model = load_chat_model(args.model)

    store = NuoNuoStore(
        path=args.path, embedder=HashingEmbedder() if args.hashing else None,
        index={"fields": ["text"]}, hops=args.hops,
    )
    agent = create_agent(model, [save_memory, search_memory], system_prompt=SYSTEM_PROMPT, store=store)

    # Each request starts a new thread: only the store carries facts between them.
    for request in REQUESTS:
        print(f"\nHuman: {request}")
        result = agent.invoke({"messages": [HumanMessage(request)]})
        for message in result["messages"][1:]:
            if isinstance(message, AIMessage) and message.tool_calls:
                for call in message.tool_calls:
                    print(f"  tool call   {call['name']}({call['args']})")
            elif isinstance(message, ToolMessage):
                for line in message.text.splitlines():
                    print(f"  tool result {line}")
            elif isinstance(message, AIMessage):
                print(f"AI: {message.text}")

    print(f"\nThe store contains {len(store.search(NAMESPACE, limit=1000))} facts under {NAMESPACE}"
          + (f" in {args.path}" if args.path else ""))


if __name__ == "__main__":
    main()
