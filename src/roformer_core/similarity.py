"""Sentence similarity and paraphrases with RoFormer-Sim, the same way in every backend.

RoFormer-Sim's sentence vector is its ``pooler_output`` (``roformer.pooler.dense`` on the first
token, ``pooler_activation="linear"``) from a bidirectional pass; the similarity of two texts is
the cosine of their L2-normalised vectors. Its paraphrases come from UniLM decoding: the text is
the source (token type 0, read bidirectionally), the paraphrase the target (type 1, generated
with the key/value cache), sampled several times and ranked by similarity to the text.

A model of any backend works (``roformer_torch``, ``roformer_tf``, ``roformer_flax``): it runs
through :func:`roformer_core.backends.get_backend`, found from the model's package. Load
RoFormer-Sim with ``unilm=True`` (its folders say ``is_decoder: true``, but here a plain causal LM
is causal in every pass; with ``unilm`` a text of token type 0 is read bidirectionally):

    model = RoFormerForCausalLM.from_pretrained("roformer_chinese_sim_char_base", unilm=True,
                                                pooler_activation="linear")

Example (a tiny random model and vocabulary):
    >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
    >>> from roformer_core.backends import get_backend
    >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今", "天", "好", "热"])
    >>> cfg = RoFormerConfig(vocab_size=9, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=32, is_decoder=True, unilm=True, pooler_activation="linear",
    ...                      add_pooling_layer=True)
    >>> model = get_backend("torch").from_config("causal_lm", cfg)
    >>> vectors = sentence_embeddings(model, tok, ["今天好", "今天热", "好热"])
    >>> vectors.shape, bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0))
    ((3, 16), True)
    >>> similarity(model, tok, ["今天好"], ["今天好", "好热"]).shape
    (1, 2)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from roformer_core.errors import InputError


def backend_of(model, backend=None):
    """The :class:`roformer_core.backends.Backend` that runs ``model`` (or the one named).

    Example:
        >>> backend_of(object(), "torch").name
        'torch'
        >>> backend_of(object())
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: cannot tell the backend of a object model; pass backend="torch", "tf" or "flax"
    """
    from roformer_core.backends import PACKAGES, get_backend

    if backend is not None:
        return get_backend(backend) if isinstance(backend, str) else backend
    root = type(model).__module__.split(".")[0]
    for name, (package, _) in PACKAGES.items():
        if root == package:
            return get_backend(name)
    raise InputError(f"cannot tell the backend of a {type(model).__name__} model; "
                     f"pass backend=\"torch\", \"tf\" or \"flax\"")


def _texts(texts, what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InputError(f"{what} must be a string or a non-empty list of strings")
    return texts


def l2_normalize(vectors, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (float32; a zero row stays zero).

    Example:
        >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), eps)


def cosine_similarity(a, b) -> np.ndarray:
    """Cosine similarity of every row of ``a`` [n, d] with every row of ``b`` [m, d]: [n, m].

    Example:
        >>> cosine_similarity(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])).tolist()
        [[1.0, 0.0, -1.0]]
    """
    a, b = np.atleast_2d(np.asarray(a, np.float32)), np.atleast_2d(np.asarray(b, np.float32))
    if a.shape[-1] != b.shape[-1]:
        raise InputError(f"vectors of different sizes: {a.shape[-1]} and {b.shape[-1]}")
    return l2_normalize(a) @ l2_normalize(b).T


def sentence_embeddings(model, tokenizer, texts: str | Sequence[str], *, batch_size: int = 32,
                        max_length: int | None = 512, backend=None) -> np.ndarray:
    """L2-normalised ``pooler_output`` of each text, ``[len(texts), hidden]`` float32, batched.

    Texts are read bidirectionally (token type 0): the model must have a pooler (RoFormer-Sim
    checkpoints hold one; ``add_pooling_layer=True`` adds one) and must not be a causal
    decoder without UniLM (load RoFormer-Sim with ``unilm=True``). Example: see the module.
    """
    texts = _texts(texts)
    config = model.config
    if not config.add_pooling_layer:
        raise InputError("the model has no pooler, so no sentence vector: load a RoFormer-Sim checkpoint "
                         "(it holds roformer.pooler.*) or pass add_pooling_layer=True")
    if config.is_decoder and not config.unilm:
        raise InputError("the model is a causal decoder (is_decoder=True, unilm=False), which reads a text "
                         "left to right only: load RoFormer-Sim with unilm=True")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    run = backend_of(model, backend)
    vectors = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=max_length is not None,
                          max_length=max_length, return_tensors="np")
        inputs = {k: np.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        inputs["token_type_ids"] = np.zeros_like(inputs["input_ids"])  # one segment: the bidirectional pass
        vectors.append(run.run(model, inputs)["pooler_output"])
    return l2_normalize(np.concatenate(vectors))


def similarity(model, tokenizer, texts_a: str | Sequence[str], texts_b: str | Sequence[str] | None = None,
               **options) -> np.ndarray:
    """Cosine similarity of every text of ``texts_a`` with every text of ``texts_b`` (default: ``texts_a``).

    ``options`` go to :func:`sentence_embeddings`. Example: see the module.
    """
    a = sentence_embeddings(model, tokenizer, texts_a, **options)
    b = a if texts_b is None else sentence_embeddings(model, tokenizer, texts_b, **options)
    return a @ b.T


def paraphrases(model, tokenizer, text: str, *, num_return_sequences: int = 8, max_new_tokens: int = 32,
                top_p: float = 0.95, top_k: int = 0, temperature: float = 1.0, seed: int | None = None,
                rank: bool = True, backend=None) -> list[str]:
    """Paraphrases of ``text`` by RoFormer-Sim's UniLM decoding, most similar first.

    The text is the source (token type 0); ``num_return_sequences`` targets are sampled
    (top-p / top-k / temperature, ``seed`` for the same samples in every backend) with token
    type 1 and the key/value cache, each ending at ``[SEP]``. Copies of the text and duplicates
    are dropped; with ``rank`` (and a pooler) the rest are sorted by :func:`similarity` to the text.

    Example:
        >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
        >>> from roformer_core.backends import get_backend
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今", "天", "好", "热"])
        >>> cfg = RoFormerConfig(vocab_size=9, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                      intermediate_size=32, is_decoder=True, unilm=True, add_pooling_layer=True)
        >>> model = get_backend("torch").from_config("causal_lm", cfg)
        >>> found = paraphrases(model, tok, "今天好", num_return_sequences=4, max_new_tokens=5, seed=0)
        >>> isinstance(found, list) and all(isinstance(t, str) and t != "今天好" for t in found)
        True
    """
    if not isinstance(text, str) or not text:
        raise InputError("text must be a non-empty string")
    config = model.config
    if not config.unilm:
        raise InputError("paraphrases need UniLM decoding: load RoFormer-Sim with unilm=True")
    run = backend_of(model, backend)
    batch = tokenizer([text], return_tensors="np")
    ids = np.asarray(batch["input_ids"])
    sep = getattr(tokenizer, "sep_token_id", None)
    out = run.generate(model, ids, np.ones_like(ids), token_type_ids=np.zeros_like(ids), do_sample=True,
                       top_p=top_p, top_k=top_k, temperature=temperature, eos_token_id=sep,
                       num_return_sequences=num_return_sequences, max_new_tokens=max_new_tokens, seed=seed)
    found: list[str] = []
    for row in np.asarray(out)[:, ids.shape[1]:].tolist():
        if sep is not None and sep in row:
            row = row[:row.index(sep)]
        candidate = tokenizer.decode(row, skip_special_tokens=True).strip()
        if candidate and candidate != text and candidate not in found:
            found.append(candidate)
    if rank and found and config.add_pooling_layer:
        scores = similarity(model, tokenizer, [text], found, backend=run)[0]
        found = [found[i] for i in np.argsort(-scores, kind="stable")]
    return found


__all__ = ["backend_of", "l2_normalize", "cosine_similarity", "sentence_embeddings", "similarity", "paraphrases"]
