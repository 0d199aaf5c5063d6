"""Python extraction with tree-sitter: imports, definitions, constants, uses, assertions, style counters."""

from __future__ import annotations

from tree_sitter import Node, QueryCursor

from hypernet.context.languages import parser, query
from hypernet.context.model import Assertion, Constant, Definition, FileFacts, Import, Param
from hypernet.context.textutil import (
    clip,
    decode,
    docstring_style,
    first_line,
    is_test_path,
    line_style,
    naming_style,
    one_line,
)

# One query for everything found anywhere in the tree; definitions are walked by hand because
# only module- and class-level ones are API (nested helpers are not).
_QUERY = """
(import_statement) @import
(import_from_statement) @import
(future_import_statement) @import
(call function: (identifier) @call)
(call function: (attribute attribute: (identifier) @call))
(type (identifier) @type)
(generic_type (identifier) @type)
(assert_statement) @assert
(string (string_start) @quote)
(ERROR) @error
"""

MAX_ASSERTIONS = 500
MAX_PREFIX_CHARS = 2000
_UNITTEST_ONE_ARG = {"assertTrue", "assertFalse", "assertIsNone", "assertIsNotNone"}


def module_name(path: str) -> str:
    """Dotted module for a repo-relative path (`a/b/__init__.py` -> `a.b`), from the repository root."""
    stem = path.rsplit(".", 1)[0]
    parts = stem.split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, level: int, path: str) -> str:
    """Absolute module of a (possibly relative) import seen in `path`."""
    if level == 0:
        return module
    pkg = path.split("/")[:-1]  # the file's package directory, `__init__.py` included
    if level > 1:
        pkg = pkg[: len(pkg) - (level - 1)] if level - 1 <= len(pkg) else []
    return ".".join([*pkg, module] if module else pkg)


def _imports(node: Node, path: str) -> list[Import]:
    line = node.start_point[0] + 1
    out: list[Import] = []
    if node.type == "import_statement":
        for child in node.children_by_field_name("name"):
            if child.type == "aliased_import":
                mod = decode(child.child_by_field_name("name").text)
                alias = child.child_by_field_name("alias")
                out.append(Import(mod, None, decode(alias.text) if alias else None, 0, line, mod))
            else:
                mod = decode(child.text)
                out.append(Import(mod, None, None, 0, line, mod))
        return out
    module_node = node.child_by_field_name("module_name")
    level, module = 0, "__future__"
    if module_node is not None:
        if module_node.type == "relative_import":
            for c in module_node.children:
                if c.type == "import_prefix":
                    level = c.text.count(b".")
                elif c.type == "dotted_name":
                    module = decode(c.text)
            if module == "__future__":
                module = ""
        else:
            module = decode(module_node.text)
    resolved = _resolve(module, level, path)
    names = node.children_by_field_name("name")
    if not names and any(c.type == "wildcard_import" for c in node.children):
        return [Import(module, "*", None, level, line, resolved)]
    for child in names:
        if child.type == "aliased_import":
            alias = child.child_by_field_name("alias")
            out.append(
                Import(module, decode(child.child_by_field_name("name").text), decode(alias.text) if alias else None,
                       level, line, resolved)
            )
        else:
            out.append(Import(module, decode(child.text), None, level, line, resolved))
    return out


def _params(node: Node | None) -> list[Param]:
    if node is None:
        return []
    out: list[Param] = []
    for c in node.named_children:
        t = c.type
        if t == "identifier":
            out.append(Param(decode(c.text)))
        elif t in ("list_splat_pattern", "dictionary_splat_pattern"):
            out.append(Param(decode(c.text)))
        elif t == "keyword_separator":
            out.append(Param("*"))
        elif t == "positional_separator":
            out.append(Param("/"))
        elif t == "typed_parameter":
            typ = c.child_by_field_name("type")
            name = next((decode(x.text) for x in c.named_children if x.type != "type"), "")
            out.append(Param(name, one_line(typ.text) if typ else None))
        elif t in ("default_parameter", "typed_default_parameter"):
            typ = c.child_by_field_name("type")
            out.append(
                Param(decode(c.child_by_field_name("name").text), one_line(typ.text) if typ else None,
                      clip(one_line(c.child_by_field_name("value").text), 80))
            )
    return out


def _docstring(body: Node | None) -> str | None:
    if body is None or body.named_child_count == 0:
        return None
    first = body.named_children[0]
    if first.type != "expression_statement" or first.named_child_count != 1:
        return None
    s = first.named_children[0]
    if s.type != "string" or s.child_count < 2:
        return None
    return decode(s.text[s.children[0].end_byte - s.start_byte : s.children[-1].start_byte - s.start_byte])


class _Walker:
    """Collects definitions/constants at module and class level."""

    def __init__(self, facts: FileFacts) -> None:
        self.f = facts

    def use(self, name: str) -> None:
        self.f.uses[name] = self.f.uses.get(name, 0) + 1

    def block(self, node: Node, prefix: str, in_class: bool, class_public: bool) -> None:
        for stmt in node.named_children:
            decorators: list[str] = []
            target = stmt
            if stmt.type == "decorated_definition":
                for d in stmt.named_children:
                    if d.type == "decorator":
                        text = one_line(d.text)[1:].strip()
                        decorators.append(text)
                        if "(" not in text:  # decorator calls are already counted as call sites
                            self.use(text.rsplit(".", 1)[-1])
                target = stmt.child_by_field_name("definition") or stmt
            if target.type == "function_definition":
                self.function(target, decorators, prefix, in_class, class_public)
            elif target.type == "class_definition":
                self.klass(target, decorators, prefix, in_class, class_public)
            elif stmt.type == "expression_statement" and not in_class and stmt.named_child_count == 1:
                self.assignment(stmt.named_children[0])
            elif stmt.type in ("if_statement", "try_statement") and not in_class:
                # `if TYPE_CHECKING:` / `try: import x` blocks still define module API.
                for sub in stmt.named_children:
                    if sub.type == "block":
                        self.block(sub, prefix, in_class, class_public)
                    elif sub.type in ("else_clause", "except_clause", "elif_clause", "finally_clause"):
                        for b in sub.named_children:
                            if b.type == "block":
                                self.block(b, prefix, in_class, class_public)

    def function(self, node: Node, decorators: list[str], prefix: str, in_class: bool, class_public: bool) -> None:
        name = decode(node.child_by_field_name("name").text)
        params_node = node.child_by_field_name("parameters")
        ret = node.child_by_field_name("return_type")
        is_async = node.children[0].type == "async"
        params = _params(params_node)
        returns = one_line(ret.text) if ret is not None else None
        sig = f"{'async ' if is_async else ''}def {name}{one_line(params_node.text) if params_node else '()'}"
        if returns:
            sig += f" -> {returns}"
        doc = _docstring(node.child_by_field_name("body"))
        self.f.conv[f"doc_{docstring_style(doc)}"] = self.f.conv.get(f"doc_{docstring_style(doc)}", 0) + 1
        self._typing(params, returns, in_class)
        self.f.definitions.append(
            Definition(
                name=name,
                qualname=f"{prefix}{name}",
                kind="method" if in_class else "function",
                line=node.start_point[0] + 1,
                end_line=node.end_point[0] + 1,
                signature=clip(sig, 300),
                params=params,
                returns=returns,
                decorators=decorators,
                doc=first_line(doc),
                is_async=is_async,
                exported=class_public and (not name.startswith("_") or (name.startswith("__") and name.endswith("__"))),
            )
        )
        self._count_name("fn", name)

    def _typing(self, params: list[Param], returns: str | None, in_class: bool) -> None:
        c = self.f.conv
        for i, p in enumerate(params):
            if p.name in ("*", "/") or (in_class and i == 0 and p.name in ("self", "cls")):
                continue
            c["params"] = c.get("params", 0) + 1
            if p.annotation:
                c["params_typed"] = c.get("params_typed", 0) + 1
        c["funcs"] = c.get("funcs", 0) + 1
        if returns:
            c["funcs_ret_typed"] = c.get("funcs_ret_typed", 0) + 1

    def _count_name(self, kind: str, name: str) -> None:
        style = naming_style(name.lstrip("_"))
        if style:
            key = f"name_{kind}_{style}"
            self.f.conv[key] = self.f.conv.get(key, 0) + 1

    def klass(self, node: Node, decorators: list[str], prefix: str, in_class: bool, class_public: bool) -> None:
        name = decode(node.child_by_field_name("name").text)
        sup = node.child_by_field_name("superclasses")
        bases: list[str] = []
        if sup is not None:
            for b in sup.named_children:
                if b.type != "keyword_argument" and b.type != "comment":
                    text = one_line(b.text)
                    bases.append(text)
                    self.use(text.split("[", 1)[0].rsplit(".", 1)[-1])
        body = node.child_by_field_name("body")
        doc = _docstring(body)
        public = class_public and not name.startswith("_")
        sig = f"class {name}{one_line(sup.text) if sup is not None else ''}"
        self.f.definitions.append(
            Definition(
                name=name,
                qualname=f"{prefix}{name}",
                kind="class",
                line=node.start_point[0] + 1,
                end_line=node.end_point[0] + 1,
                signature=clip(sig, 300),
                bases=bases,
                decorators=decorators,
                doc=first_line(doc),
                exported=public,
            )
        )
        self._count_name("class", name)
        style = f"doc_{docstring_style(doc)}"
        self.f.conv[style] = self.f.conv.get(style, 0) + 1
        self.f.conv["classes"] = self.f.conv.get("classes", 0) + 1
        if any(b.rsplit(".", 1)[-1] == "TestCase" for b in bases):
            self.f.conv["test_unittest"] = self.f.conv.get("test_unittest", 0) + 1
        if body is not None:
            self.block(body, f"{prefix}{name}.", True, public)

    def assignment(self, node: Node) -> None:
        if node.type != "assignment":
            return
        left = node.child_by_field_name("left")
        if left is None or left.type != "identifier":
            return
        name = decode(left.text)
        right = node.child_by_field_name("right")
        if name == "__all__" and right is not None and right.type in ("list", "tuple"):
            names = [decode(_string_body(s)) for s in right.named_children if s.type == "string"]
            self.f.exports = names
            return
        if not (name.isupper() or (name.lstrip("_").replace("_", "").isupper() and name.strip("_"))):
            return
        typ = node.child_by_field_name("type")
        self.f.constants.append(
            Constant(name, node.start_point[0] + 1, one_line(typ.text) if typ else None,
                     clip(one_line(right.text), 80) if right is not None else "")
        )


def _string_body(s: Node) -> bytes:
    if s.child_count < 2:
        return s.text
    return s.text[s.children[0].end_byte - s.start_byte : s.children[-1].start_byte - s.start_byte]


def _assertion(node: Node, kind: str, src: bytes, path: str, target: Node) -> Assertion:
    # The prefix starts at the enclosing function (its decorators included) so it is self-contained
    # yet small; the file header can be taken from the file itself if a caller wants more.
    start = node
    anc = node.parent
    while anc is not None:
        if anc.type == "function_definition":
            start = anc.parent if anc.parent is not None and anc.parent.type == "decorated_definition" else anc
            break
        anc = anc.parent
    line_start = src.rfind(b"\n", 0, start.start_byte) + 1
    floor = target.start_byte - 4 * MAX_PREFIX_CHARS  # never decode more than the cap can keep
    if floor > line_start:
        line_start = src.find(b"\n", floor, target.start_byte) + 1 or floor
    prefix = decode(src[line_start : target.start_byte])
    if len(prefix) > MAX_PREFIX_CHARS:
        prefix = prefix[-MAX_PREFIX_CHARS:]
    return Assertion(path, target.start_point[0] + 1, prefix, decode(target.text), kind)


def extract_python(path: str, src: bytes, facts: FileFacts) -> None:
    """Fill `facts` from Python source bytes (syntax errors tolerated: ERROR subtrees are skipped)."""
    tree = parser("python").parse(src)
    root = tree.root_node
    facts.module = module_name(path)
    facts.is_test = is_test_path(path)
    walker = _Walker(facts)
    walker.block(root, "", False, True)
    caps = QueryCursor(query("python", _QUERY)).captures(root)
    for node in sorted(caps.get("import", ()), key=lambda n: n.start_byte):
        facts.imports.extend(_imports(node, path))
    uses = facts.uses
    conv = facts.conv
    # (start byte, kind, statement node, target node); capped only after sorting, because the
    # capture order of a QueryCursor is not guaranteed to be stable.
    found: list[tuple[int, str, Node, Node]] = []
    raw: dict[bytes, int] = {}  # count by raw bytes, decode each distinct name once
    for node in caps.get("call", ()):
        b = node.text
        raw[b] = raw.get(b, 0) + 1
        if facts.is_test and b.startswith(b"assert"):
            name = decode(b)
            call = node.parent.parent
            args = call.child_by_field_name("arguments")
            if args is not None and node.parent.child_by_field_name("object") is not None:
                pos = [a for a in args.named_children if a.type not in ("keyword_argument", "comment")]
                idx = 0 if name in _UNITTEST_ONE_ARG else 1
                if len(pos) > idx:
                    found.append((call.start_byte, name, call, pos[idx]))
    for node in caps.get("type", ()):
        b = node.text
        raw[b] = raw.get(b, 0) + 1
    for b, n in raw.items():
        name = decode(b)
        uses[name] = uses.get(name, 0) + n
    for imp in facts.imports:
        if imp.name and imp.name != "*":
            uses[imp.name] = uses.get(imp.name, 0) + 1
        if imp.module.split(".", 1)[0] in ("pytest", "unittest"):
            key = f"test_{imp.module.split('.', 1)[0]}"
            conv[key] = conv.get(key, 0) + 1
    if facts.is_test:
        for node in caps.get("assert", ()):
            conv["test_bare_assert"] = conv.get("test_bare_assert", 0) + 1
            expr = node.named_children[0] if node.named_child_count else None
            if expr is None:
                continue
            target = expr
            if expr.type == "comparison_operator" and expr.named_child_count == 2:
                target = expr.named_children[1]
            found.append((node.start_byte, "assert", node, target))
        found.sort(key=lambda t: (t[0], t[3].start_byte))
        facts.assertions = [_assertion(stmt, kind, src, path, tgt) for _, kind, stmt, tgt in found[:MAX_ASSERTIONS]]
    quotes = caps.get("quote", ())
    double = len([q for q in quotes if q.text.endswith(b'"')])
    conv["quote_double"] = double
    conv["quote_single"] = len(quotes) - double
    facts.errors = len(caps.get("error", ())) + (1 if root.has_error and not caps.get("error") else 0)
    for constant in facts.constants:
        walker._count_name("const", constant.name)
    line_style(src, conv)
    facts.uses = dict(sorted(uses.items()))  # capture order varies between processes; keep output canonical
