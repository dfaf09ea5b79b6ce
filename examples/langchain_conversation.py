"""Hold a conversation whose memory is NuoNuoMemory, in a classic ConversationChain.

NuoNuoMemory takes the place of ``ConversationBufferMemory``: instead of the
whole transcript, each turn's prompt gets the past turns that the associative
memory recalls for the new input, following links with ``--hops 2``. The script
prints what the memory recalled before each reply.

Runs offline by default, with a small fake chat model that replies from the
recalled history. With ``--path memory.db`` the conversation is kept in a file,
so a second run remembers the first. To use a local Ollama model instead (needs
``pip install langchain-ollama`` and ``ollama serve`` on this machine)::

    python examples/langchain_conversation.py --model ollama:llama3.2
    NUONUO_CHAT_MODEL=ollama:llama3.2 python examples/langchain_conversation.py
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import warnings
from typing import Any
from urllib.parse import urlparse

from langchain_classic.chains import ConversationChain
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from nuonuo_core import HashingEmbedder
from nuonuo_langchain import NuoNuoMemory

TURNS = [
    "Hi, I'm Ana. My dog is called Max.",
    "Max loves running on the beach at Matosinhos.",
    "I work night shifts as a nurse in Porto.",
    "My sister Rita plays the violin.",
    "Where could I take my dog this weekend?",
    "What do you know about my job?",
]

OLLAMA_URL = "http://127.0.0.1:11434"


class HistoryQuotingChatModel(BaseChatModel):
    """A fake chat model: it acknowledges statements and answers questions by
    quoting the human lines of the history in its prompt."""

    @property
    def _llm_type(self) -> str:
        return "history-quoting-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = messages[-1].text
        history, _, current = prompt.partition("Current conversation:\n")[2].rpartition("\nHuman: ")
        if not current.rstrip().removesuffix("AI:").rstrip().endswith("?"):
            reply = "Thanks, I will remember that."
        else:
            remembered = [line.removeprefix("Human: ") for line in history.splitlines() if line.startswith("Human: ")]
            reply = "You told me: " + " ".join(remembered) if remembered else "I don't know yet."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


def load_chat_model(choice: str) -> BaseChatModel:
    """Return the fake model, or a local Ollama model for ``ollama:<name>``."""
    if choice == "fake":
        return HistoryQuotingChatModel()
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
    parser.add_argument("--path", help="SQLite file that keeps the conversation between runs")
    parser.add_argument("--k", type=int, default=3, help="memories recalled per turn (default 3)")
    parser.add_argument("--hops", type=int, default=2, help="1 is single-hop recall; 2 follows links (default 2)")
    parser.add_argument("--hashing", action="store_true",
                        help="embed with the model-free HashingEmbedder instead of all-MiniLM-L6-v2")
    args = parser.parse_args()
    model = load_chat_model(args.model)

    # ConversationChain is deprecated in LangChain in favour of agents, but
    # still works and is the usual home of chain memories.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    memory = NuoNuoMemory(
        path=args.path, embedder=HashingEmbedder() if args.hashing else None,
        k=args.k, hops=args.hops, session_id="ana",
    )
    chain = ConversationChain(llm=model, memory=memory)

    for turn in TURNS:
        recalled = memory.load_memory_variables({"input": turn})["history"]
        print(f"\nHuman: {turn}")
        for line in recalled.splitlines():
            print(f"    recalled | {line}")
        print(f"AI: {chain.invoke({'input': turn})['response']}")

    print(f"\n{len(memory.memory)} memories stored" + (f" in {args.path}" if args.path else ""))


if __name__ == "__main__":
    main()
