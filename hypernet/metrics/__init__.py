"""User-visible metrics of an adapter on a repository's held-out files (issue 17), shared by `code2lora eval` and
the service's per-version scoring: identifier completion at cut points, invented identifiers, generated next
lines, and teacher-forced losses on all tokens and on repository-identifier tokens.

Library layer: imports nothing from `training/` or `service/`.
"""

from hypernet.metrics.cuts import (
    CUT_MODES,
    Chunk,
    Cut,
    LineCase,
    identifier_cuts,
    line_cases,
    repo_cuts,
    repo_line_cases,
    text_chunks,
)
from hypernet.metrics.generate import (
    chunk_losses,
    complete,
    stack_adapters,
    summarise_losses,
    token_losses_on_text,
)
from hypernet.metrics.score import (
    MetricBudget,
    identifier_metrics,
    line_metrics,
    predicted_identifier,
    rest_of_line,
    score_adapter,
    score_arms,
)
from hypernet.metrics.text import (
    BUILTIN_NAMES,
    IDENT_RE,
    edit_similarity,
    exact_match,
    first_identifier,
    identifier_spans,
    is_specific_identifier,
    known_identifiers,
    levenshtein,
    mark_tokens,
    normalise,
    repo_identifiers,
    stable_hash,
)

__all__ = [
    "BUILTIN_NAMES", "CUT_MODES", "IDENT_RE", "Chunk", "Cut", "LineCase", "MetricBudget", "chunk_losses", "complete",
    "edit_similarity", "exact_match", "first_identifier", "identifier_cuts", "identifier_metrics",
    "identifier_spans", "is_specific_identifier", "known_identifiers", "levenshtein", "line_cases", "line_metrics",
    "mark_tokens", "normalise", "predicted_identifier", "repo_cuts", "repo_identifiers", "repo_line_cases",
    "rest_of_line", "score_adapter", "score_arms", "stack_adapters", "stable_hash", "summarise_losses",
    "text_chunks", "token_losses_on_text",
]
