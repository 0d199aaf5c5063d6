"""Repository context extraction with tree-sitter: per-file facts, RepoContext, incremental updates."""

from hypernet.context.analysis import RankedDefinition
from hypernet.context.extract import extract_bytes
from hypernet.context.incremental import FileChange, changes_between, update_context
from hypernet.context.model import Assertion, Constant, Definition, FileFacts, Import, Param
from hypernet.context.render import estimate_tokens
from hypernet.context.repo import RepoContext, compute_digest, extract_repo

__all__ = [
    "Assertion",
    "Constant",
    "Definition",
    "FileChange",
    "FileFacts",
    "Import",
    "Param",
    "RankedDefinition",
    "RepoContext",
    "changes_between",
    "compute_digest",
    "estimate_tokens",
    "extract_bytes",
    "extract_repo",
    "update_context",
]
