"""Explanations for texts: how much each word moved a text model's output, by Shapley values
(exact, Kernel SHAP, permutation sampling) or LIME, on the coalition machinery of the image and
table methods.

The features are the text's words. Hiding a word removes it (or replaces it with ``mask``); a
coalition of kept words is one text, and the model's scores on these texts are the value
function the estimators of :mod:`seethrough.attribution` read.

>>> from seethrough.text import explain_text
>>> e = explain_text(pipeline.predict_proba, "the plot was dreadful", "lime")  # doctest: +SKIP
>>> print(e.table(top=3))                                                      # doctest: +SKIP
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .attribution.estimators import EXACT_LIMIT
from .attribution.explanation import FeatureExplanation
from .attribution.methods import GAME_METHODS, FeatureMethod, Run, find_method
from .attribution.scores import ScoreFunction, output_index
from .core.progress import Progress
from .errors import InvalidInputError, InvalidParameterError
from .registry import validate_params

__all__ = ["explain_text", "TextGame", "Tokens", "tokenize", "TEXT_METHODS", "TextMethod", "WORDS"]

WORDS = re.compile(r"\w+(?:['\u2019\-]\w+)*|[^\w\s]+")
"""The default tokenizer: a word is a run of letters and digits, with inner apostrophes and
hyphens (``don't``, ``well-made``); a run of punctuation (``!``, ``...``) is a token of its own,
so a model's reaction to ``!`` or ``?`` shows; white space separates tokens and is never one."""

Tokenizer = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class Tokens:
    """A text cut into tokens: ``text == separators[0] + tokens[0] + separators[1] + ... +
    tokens[-1] + separators[-1]`` (``len(separators) == len(tokens) + 1``)."""

    tokens: tuple[str, ...]
    separators: tuple[str, ...]

    @property
    def text(self) -> str:
        """The whole text."""
        return self.join(np.ones(len(self.tokens), dtype=bool))

    def join(self, keep: np.ndarray, mask: str | None = None) -> str:
        """The text with the tokens where ``keep`` is ``False`` hidden.

        With ``mask=None`` a hidden token is removed with the separator before it (the text's
        first kept token takes the leading separator instead), so ``"the plot was dull"``
        without ``"was"`` is ``"the plot dull"``. With a ``mask`` string, a hidden token is
        replaced by it and every separator stays.
        """
        seps, parts = self.separators, [self.separators[0]]
        if mask is not None:
            for i, token in enumerate(self.tokens):
                parts += [token if keep[i] else mask, seps[i + 1]]
            return "".join(parts)
        first = True
        for i in np.flatnonzero(keep):
            if not first:
                parts.append(seps[i])
            parts.append(self.tokens[i])
            first = False
        parts.append(seps[-1])
        return "".join(parts)


def tokenize(text: str | Sequence[str], tokenizer: Tokenizer | None = None) -> Tokens:
    """Cut ``text`` into :class:`Tokens`.

    Args:
        text: the text, or its tokens already cut (then joined by single spaces).
        tokenizer: ``tokenizer(text) -> tokens``, each token a piece of the text, in order; the
            text between them is the separators (default: :data:`WORDS`).

    Raises:
        InvalidInputError: a text that is empty or not a string, or tokens that are not pieces
            of the text in order.
    """
    if not isinstance(text, str):
        if tokenizer is not None:
            raise InvalidParameterError("give a text with a tokenizer, or tokens without one")
        if not isinstance(text, Sequence) or not all(isinstance(t, str) and t for t in text):
            raise InvalidInputError(
                f"a text is a string or a list of non-empty token strings, got {type(text).__name__}"
            )
        tokens = tuple(text)
        seps = ("",) + (" ",) * (len(tokens) - 1) + ("",) if tokens else ("",)
    elif tokenizer is None:
        found = list(WORDS.finditer(text))
        tokens = tuple(m.group() for m in found)
        ends = [0] + [m.end() for m in found]
        starts = [m.start() for m in found] + [len(text)]
        seps = tuple(text[a:b] for a, b in zip(ends, starts, strict=True))
    else:
        tokens, seps = _locate(text, tokenizer(text))
    if not tokens:
        raise InvalidInputError("the text has no words to explain")
    return Tokens(tokens, seps)


def _locate(text: str, pieces: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tokens a tokenizer gave and the separators between them, found in ``text``."""
    tokens, seps, at = [], [], 0
    for k, piece in enumerate(pieces):
        if not isinstance(piece, str) or not piece:
            raise InvalidInputError(
                f"the tokenizer's token {k} is {piece!r}, not a non-empty string"
            )
        found = text.find(piece, at)
        if found < 0:
            raise InvalidInputError(
                f"the tokenizer's token {k} {piece!r} is not in the text after character {at}: "
                "a tokenizer must return pieces of the text, in order (not ids or lower-cased "
                "or sub-word forms)"
            )
        seps.append(text[at:found])
        tokens.append(piece)
        at = found + len(piece)
    seps.append(text[at:])
    return tuple(tokens), tuple(seps)


@dataclass
class TextGame:
    """The value function of a text's words: ``game(z)`` gives the model's scores ``(M, T)`` on
    the ``M`` texts that keep the words where ``z`` ``(M, F)`` is ``True``
    (:class:`~seethrough.attribution.estimators.Game`)."""

    score: ScoreFunction
    words: Tokens
    mask: str | None = None

    @property
    def n_features(self) -> int:
        return len(self.words.tokens)

    def texts(self, z: np.ndarray) -> list[str]:
        """The texts of the coalitions ``z``."""
        return [self.words.join(keep, self.mask) for keep in np.asarray(z, dtype=bool)]

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.score(self.texts(z))


TEXT_METHODS: dict[str, FeatureMethod] = {
    name: GAME_METHODS[name] for name in ("lime", "kernelshap", "permutation_shap", "exact_shapley")
}
"""The methods :func:`explain_text` runs, by name (the same as a table's Shapley methods and
coalition LIME: :data:`~seethrough.attribution.methods.GAME_METHODS`)."""

TextMethod = FeatureMethod  # the name this module used first


def _score_function(predict_fn: Any, labels: Sequence[str] | None) -> ScoreFunction:
    """``predict_fn`` as a checked function of a list of texts; labels given, else the
    ``classes_`` of the estimator a bound method belongs to (``pipeline.predict_proba``)."""
    if isinstance(predict_fn, ScoreFunction):
        score = predict_fn
    elif callable(predict_fn):
        owner = getattr(predict_fn, "__self__", None)
        classes = getattr(owner, "classes_", None)
        name = getattr(predict_fn, "__name__", "")
        output = name if name in ("predict_proba", "decision_function", "predict") else "function"
        found = [str(c) for c in classes] if classes is not None and output != "predict" else None
        if found is not None and output == "decision_function" and len(found) == 2:
            found = found[1:]  # one score: the positive class's
        score = ScoreFunction(predict_fn, output, found, "texts")
    else:
        raise InvalidParameterError(
            f"predict_fn must be a function of a list of texts, got {type(predict_fn).__name__} "
            "(for a scikit-learn pipeline give pipeline.predict_proba)"
        )
    if labels is not None:
        score = ScoreFunction(score.fn, score.output, [str(x) for x in labels], "texts")
    return score


def explain_text(
    predict_fn: Callable[[list[str]], Any],
    text: str | Sequence[str],
    method: str = "lime",
    *,
    target: int | str | None = None,
    labels: Sequence[str] | None = None,
    tokenizer: Tokenizer | None = None,
    mask: str | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: Progress | None = None,
    **params: Any,
) -> FeatureExplanation:
    """Explain a text model's output on one text: how much each word moved it.

    The words are the features (:func:`tokenize`); a coalition of them is the text with the
    other words removed (or replaced by ``mask``), and ``v(S)`` the model's score on it:

    - ``"lime"`` (Ribeiro et al., KDD 2016): a weighted ridge regression of the scores on which
      words are kept, over samples that keep each word with probability 1/2, weighted by
      ``sqrt(exp(-d^2 / 0.25^2))`` with ``d`` the cosine distance to the whole text (the kernel
      of lime's ``LimeTextExplainer``); ``values`` are the slopes, ``base_value`` the intercept.
    - ``"kernelshap"`` (Lundberg & Lee, NeurIPS 2017), ``"permutation_shap"`` (Strumbelj &
      Kononenko 2014), ``"exact_shapley"`` (Shapley 1953, at most
      :data:`~seethrough.attribution.estimators.EXACT_LIMIT` words): Shapley values
      ``phi_i = sum_{S not containing i} |S|! (F-|S|-1)! / F! (v(S+i) - v(S))``, with
      ``base_value = v(no word)`` and ``base_value + sum(values) == prediction``.

    Args:
        predict_fn: ``predict_fn(texts: list[str]) -> scores`` ``(n, T)`` (probabilities or
            logits) or ``(n,)``; a scikit-learn text pipeline's ``predict_proba`` works as is
            and brings its classes as labels.
        text: the text, or its tokens already cut (joined by single spaces).
        method: ``"lime"``, ``"kernelshap"``, ``"permutation_shap"`` or ``"exact_shapley"``
            (see :data:`TEXT_METHODS`).
        target: the output explained, by index or label (default: the text's top output).
        labels: the outputs' names.
        tokenizer: ``tokenizer(text) -> tokens``, pieces of the text in order (default: words
            and runs of punctuation, :data:`WORDS`).
        mask: a string that replaces a hidden word (``"[MASK]"``, ``"UNK"``); default: hidden
            words are removed.
        seed: seeds the sampling; the same seed gives the same values.
        batch_size: most texts per model call.
        progress: ``progress(done, total)`` per batch; returning ``False`` cancels
            (:class:`~seethrough.errors.CancelledError`).
        **params: the method's parameters (``n_samples``, ``kernel_width``, ``n_permutations``,
            ...).

    Returns:
        A :class:`~seethrough.attribution.FeatureExplanation` of kind ``"text"``: ``features``
        and ``shown`` are the words, ``params["separators"]`` the text between them (so
        ``separators[0] + words[0] + separators[1] + ...`` is the text).

    Raises:
        InvalidInputError: an empty text, or a tokenizer whose tokens are not in the text.
        InvalidParameterError: an unknown method or parameter; ``exact_shapley`` on more than
            ``EXACT_LIMIT`` words.
        ModelOutputError: ``predict_fn`` returned anything but ``(n,)`` or ``(n, T)`` numbers.
        InvalidTargetError, UnknownClassError: a target the model does not have.
    """
    start = time.perf_counter()
    info = find_method(TEXT_METHODS, method, "text")
    config = validate_params(info.params, params, method)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    if mask is not None and not isinstance(mask, str):
        raise InvalidParameterError(f"mask must be a string or None, got {type(mask).__name__}")
    words = tokenize(text, tokenizer)
    f = len(words.tokens)
    if info.name == "exact_shapley" and f > EXACT_LIMIT:
        raise InvalidParameterError(
            f"exact_shapley enumerates 2^{f} texts for {f} words; it takes at most "
            f"{EXACT_LIMIT} words (use kernelshap, permutation_shap or lime)"
        )
    score = _score_function(predict_fn, labels)
    prediction = score([words.text])[0]
    t = output_index(target, score.labels, prediction)
    game = TextGame(score, words, mask)
    a = info.run(game, Run(config, torch.Generator().manual_seed(seed), batch_size, progress))
    tokenizer_name = "words" if tokenizer is None else getattr(tokenizer, "__name__", "custom")
    return FeatureExplanation(
        kind="text",
        method=info.name,
        title=info.title,
        features=list(words.tokens),
        shown=list(words.tokens),
        values=a.values[t],
        target=t,
        label=score.labels[t] if score.labels and t < len(score.labels) else None,
        prediction=float(prediction[t]),
        base_value=float(a.base[t]),
        output=score.output,
        all_values=a.values,
        params={
            **config,
            "seed": seed,
            "tokenizer": tokenizer_name if isinstance(text, str) else "given tokens",
            "mask": mask,
            "separators": list(words.separators),
        },
        stats=a.stats,
        evaluations=a.evaluations,
        seconds=time.perf_counter() - start,
    )
