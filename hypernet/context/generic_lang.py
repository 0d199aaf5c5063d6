"""JavaScript/TypeScript, Go, Rust and Java extraction: definitions, signatures, imports, uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tree_sitter import Node, QueryCursor

from hypernet.context.languages import parser, query
from hypernet.context.model import Constant, Definition, FileFacts, Import, Param
from hypernet.context.textutil import clip, decode, first_line, is_test_path, line_style, naming_style, one_line


@dataclass(frozen=True)
class Spec:
    """What differs between languages: the query, scoping node types and a few rules."""

    query: str
    functions: frozenset[str]  # definitions nested inside these are local, not API
    containers: dict[str, str]  # node type -> field holding the container's name (for qualnames)
    imports: Callable[[Node], list[Import]]
    exported: Callable[[Node, str], bool]
    extra_kinds: dict[str, Callable[[Node], str]] = field(default_factory=dict)


# ---------------------------------------------------------------- imports per language


def _js_imports(node: Node) -> list[Import]:
    src = node.child_by_field_name("source")
    if src is None:
        return []
    module = decode(src.text).strip("'\"`")
    line = node.start_point[0] + 1
    out: list[Import] = []
    for clause in node.named_children:
        if clause.type != "import_clause":
            continue
        for c in clause.named_children:
            if c.type == "identifier":
                out.append(Import(module, "default", decode(c.text), 0, line, module))
            elif c.type == "namespace_import":
                alias = next((decode(x.text) for x in c.named_children), None)
                out.append(Import(module, "*", alias, 0, line, module))
            elif c.type == "named_imports":
                for s in c.named_children:
                    if s.type == "import_specifier":
                        name_node = s.child_by_field_name("name")
                        alias_node = s.child_by_field_name("alias")
                        out.append(Import(module, decode(name_node.text) if name_node else "",
                                          decode(alias_node.text) if alias_node else None,
                                          0, line, module))
    return out or [Import(module, None, None, 0, line, module)]


def _go_imports(node: Node) -> list[Import]:
    path = node.child_by_field_name("path")
    if path is None:
        return []
    module = decode(path.text).strip('"`')
    alias = node.child_by_field_name("name")
    return [Import(module, None, decode(alias.text) if alias else None, 0, node.start_point[0] + 1, module)]


def _rust_use(node: Node, prefix: str, line: int, out: list[Import]) -> None:
    t = node.type
    if t in ("scoped_identifier", "identifier", "crate", "self", "super"):
        full = f"{prefix}::{decode(node.text)}" if prefix else decode(node.text)
        mod, _, name = full.rpartition("::")
        out.append(Import(mod, name, None, 0, line, mod))
    elif t == "use_as_clause":
        p = node.child_by_field_name("path")
        a = node.child_by_field_name("alias")
        full = f"{prefix}::{decode(p.text)}" if prefix else decode(p.text)
        mod, _, name = full.rpartition("::")
        out.append(Import(mod, name, decode(a.text) if a else None, 0, line, mod))
    elif t == "use_wildcard":
        text = decode(node.text)
        mod = text[:-3] if text.endswith("::*") else text
        mod = f"{prefix}::{mod}" if prefix and mod else (prefix or mod)
        out.append(Import(mod, "*", None, 0, line, mod))
    elif t == "scoped_use_list":
        p = node.child_by_field_name("path")
        sub = f"{prefix}::{decode(p.text)}" if prefix and p else (decode(p.text) if p else prefix)
        lst = node.child_by_field_name("list")
        if lst is not None:
            _rust_use(lst, sub, line, out)
    elif t == "use_list":
        for c in node.named_children:
            _rust_use(c, prefix, line, out)


def _rust_imports(node: Node) -> list[Import]:
    arg = node.child_by_field_name("argument")
    out: list[Import] = []
    if arg is not None:
        _rust_use(arg, "", node.start_point[0] + 1, out)
    return out


def _java_imports(node: Node) -> list[Import]:
    target = next((c for c in node.named_children if c.type in ("scoped_identifier", "identifier")), None)
    if target is None:
        return []
    text = decode(target.text)
    line = node.start_point[0] + 1
    if any(c.type == "asterisk" for c in node.named_children):
        return [Import(text, "*", None, 0, line, text)]
    mod, _, name = text.rpartition(".")
    return [Import(mod, name, None, 0, line, mod)]


# ---------------------------------------------------------------- export rules


def _js_exported(node: Node, name: str) -> bool:
    p = node.parent
    while p is not None and p.type in ("variable_declarator", "lexical_declaration", "variable_declaration"):
        p = p.parent
    if p is not None and p.type == "export_statement":
        return True
    if node.type in ("method_definition", "method_signature", "public_field_definition"):
        return not name.startswith("#") and not any(
            c.type == "accessibility_modifier" and c.text in (b"private", b"protected") for c in node.children
        )
    return False


def _go_exported(node: Node, name: str) -> bool:
    return name[:1].isupper()


def _rust_exported(node: Node, name: str) -> bool:
    if any(c.type == "visibility_modifier" for c in node.children):
        return True
    p = node.parent.parent if node.parent is not None else None  # declaration_list -> impl/trait
    return p is not None and (p.type == "trait_item" or (p.type == "impl_item" and p.child_by_field_name("trait") is not None))


def _java_exported(node: Node, name: str) -> bool:
    mods = next((c for c in node.children if c.type == "modifiers"), None)
    if mods is not None and b"public" in mods.text.split():
        return True
    p = node.parent.parent if node.parent is not None else None
    return p is not None and p.type == "interface_declaration"


_JS_DEFS = """
(function_declaration name: (identifier) @name) @def.function
(generator_function_declaration name: (identifier) @name) @def.function
(class_declaration name: (_) @name) @def.class
(method_definition name: (_) @name) @def.method
(variable_declarator name: (identifier) @name value: [(arrow_function) (function_expression)]) @def.function
(import_statement) @import
(call_expression function: (identifier) @call)
(call_expression function: (member_expression property: (property_identifier) @call))
(new_expression constructor: (identifier) @call)
(lexical_declaration (variable_declarator name: (identifier) @const.name)) @const
(ERROR) @error
"""
_JS_ONLY = """
(class_heritage (identifier) @type)
"""
_TS_EXTRA = """
(extends_clause value: (identifier) @type)
(abstract_class_declaration name: (_) @name) @def.class
(interface_declaration name: (_) @name) @def.interface
(type_alias_declaration name: (_) @name) @def.type
(enum_declaration name: (_) @name) @def.enum
(method_signature name: (_) @name) @def.method
(abstract_method_signature name: (_) @name) @def.method
(type_identifier) @type
"""
_JS_FUNCS = frozenset({"function_declaration", "generator_function_declaration", "arrow_function",
                       "function_expression", "method_definition", "function", "generator_function"})
_JS_CONTAINERS = {"class_declaration": "name", "abstract_class_declaration": "name", "interface_declaration": "name"}

_GO = """
(function_declaration name: (identifier) @name) @def.function
(method_declaration name: (field_identifier) @name) @def.method
(type_spec name: (type_identifier) @name) @def.type
(import_spec) @import
(call_expression function: (identifier) @call)
(call_expression function: (selector_expression field: (field_identifier) @call))
(type_identifier) @type
(const_spec name: (identifier) @const.name) @const
(ERROR) @error
"""

_RUST = """
(function_item name: (identifier) @name) @def.function
(function_signature_item name: (identifier) @name) @def.function
(struct_item name: (type_identifier) @name) @def.struct
(enum_item name: (type_identifier) @name) @def.enum
(union_item name: (type_identifier) @name) @def.struct
(trait_item name: (type_identifier) @name) @def.trait
(type_item name: (type_identifier) @name) @def.type
(macro_definition name: (identifier) @name) @def.macro
(use_declaration) @import
(call_expression function: (identifier) @call)
(call_expression function: (scoped_identifier name: (identifier) @call))
(call_expression function: (field_expression field: (field_identifier) @call))
(macro_invocation macro: (identifier) @call)
(type_identifier) @type
(const_item name: (identifier) @const.name) @const
(static_item name: (identifier) @const.name) @const
(ERROR) @error
"""

_JAVA = """
(class_declaration name: (identifier) @name) @def.class
(record_declaration name: (identifier) @name) @def.class
(interface_declaration name: (identifier) @name) @def.interface
(enum_declaration name: (identifier) @name) @def.enum
(method_declaration name: (identifier) @name) @def.method
(constructor_declaration name: (identifier) @name) @def.constructor
(import_declaration) @import
(method_invocation name: (identifier) @call)
(object_creation_expression type: (type_identifier) @call)
(type_identifier) @type
(field_declaration declarator: (variable_declarator name: (identifier) @const.name)) @const
(ERROR) @error
"""


def _go_type_kind(node: Node) -> str:
    t = node.child_by_field_name("type")
    return {"struct_type": "struct", "interface_type": "interface"}.get(t.type if t else "", "type")


SPECS: dict[str, Spec] = {
    "javascript": Spec(_JS_DEFS + _JS_ONLY, _JS_FUNCS, _JS_CONTAINERS, _js_imports, _js_exported),
    "typescript": Spec(_JS_DEFS + _TS_EXTRA, _JS_FUNCS, _JS_CONTAINERS, _js_imports, _js_exported),
    "tsx": Spec(_JS_DEFS + _TS_EXTRA, _JS_FUNCS, _JS_CONTAINERS, _js_imports, _js_exported),
    "go": Spec(_GO, frozenset({"function_declaration", "method_declaration", "func_literal"}), {}, _go_imports,
               _go_exported, {"type_spec": _go_type_kind}),
    "rust": Spec(_RUST, frozenset({"function_item", "closure_expression"}),
                 {"impl_item": "type", "trait_item": "name"}, _rust_imports, _rust_exported),
    "java": Spec(_JAVA, frozenset({"method_declaration", "constructor_declaration", "lambda_expression"}),
                 {"class_declaration": "name", "interface_declaration": "name", "enum_declaration": "name",
                  "record_declaration": "name"}, _java_imports, _java_exported),
}

# ---------------------------------------------------------------- shared helpers


_PARENT_LEVELS = 4


class _Located:
    """A node that knows its nearest parents from the walk (`Node.parent` and `prev_sibling` cost O(depth) in
    tree-sitter); anything else is the node's own attribute."""

    __slots__ = ("node", "_parents")

    def __init__(self, node: Node, parents: dict[int, Node]) -> None:
        self.node, self._parents = node, parents

    def __getattr__(self, name: str):
        return getattr(self.node, name)

    @property
    def parent(self) -> _Located | None:
        p = self._parents.get(self.node.id)
        if p is None:
            p = self.node.parent
        return _Located(p, self._parents) if p is not None else None

    @property
    def prev_sibling(self) -> _Located | None:
        parent = self._parents.get(self.node.id)
        if parent is None or parent.child_count > 64:  # flat: the real lookup is cheap, a scan would not be
            prev = self.node.prev_sibling
        else:
            kids = parent.children
            i = next((k for k, c in enumerate(kids) if c.id == self.node.id), 0)
            prev = kids[i - 1] if i > 0 else None
        return _Located(prev, self._parents) if prev is not None else None


def _scopes(root: Node, spec: Spec, wanted: set[int],
            parents: dict[int, Node] | None = None) -> dict[int, tuple[list[str], bool]]:
    """`_scope` of every node whose id is in `wanted`, from one walk down the tree.

    tree-sitter's `Node.parent` walks down from the root each time (O(depth)), so climbing parents from every
    definition was cubic in nesting depth (a 369 KB JavaScript file took 117 s, issue 21 Medium 6). A cursor
    walk carries the enclosing containers and the "inside a function" flag down instead: linear in the tree.
    """
    out: dict[int, tuple[list[str], bool]] = {}
    if not wanted:
        return out
    cursor = root.walk()
    ancestors: list[Node] = []  # the nodes above the cursor, nearest last
    # per depth: (container names so far, local flag) of the node at that depth, including the node itself
    stack: list[tuple[list[str], bool]] = []
    parent_scope: tuple[list[str], bool] = ([], False)
    while True:
        node = cursor.node
        assert node is not None
        if node.id in wanted:
            out[node.id] = (list(parent_scope[0]), parent_scope[1])
            if parents is not None:  # the few levels _doc and the export rules climb
                chain = [node, *reversed(ancestors[-_PARENT_LEVELS:])]
                for child, parent in zip(chain, chain[1:], strict=False):
                    parents[child.id] = parent
        names, local = parent_scope
        if not local:
            if node.type in spec.functions:
                local = True
            else:
                fname = spec.containers.get(node.type)
                if fname:
                    n = node.child_by_field_name(fname)
                    if n is not None:
                        names = [*names, decode(n.text).split("<", 1)[0]]
        if cursor.goto_first_child():
            stack.append(parent_scope)
            ancestors.append(node)
            parent_scope = (names, local)
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return out
            parent_scope = stack.pop()
            ancestors.pop()


def _scope(node: Node, spec: Spec) -> tuple[list[str], bool]:
    """Names of enclosing containers (outermost first) and whether the node is local to a function."""
    names: list[str] = []
    p = node.parent
    while p is not None:
        if p.type in spec.functions:
            return names, True
        fname = spec.containers.get(p.type)
        if fname:
            n = p.child_by_field_name(fname)
            if n is not None:
                names.append(decode(n.text).split("<", 1)[0])
        p = p.parent
    names.reverse()
    return names, False


def _signature(node: Node) -> str:
    body = node.child_by_field_name("body")
    if node.type == "variable_declarator":
        value = node.child_by_field_name("value")
        body = value.child_by_field_name("body") if value is not None else None
    if node.type == "type_spec":
        t = node.child_by_field_name("type")
        if t is not None and t.type in ("struct_type", "interface_type"):
            return f"type {decode(node.child_by_field_name('name').text)} {t.type.split('_')[0]}"
        return clip("type " + one_line(node.text), 200)
    end = body.start_byte if body is not None else node.end_byte
    text = one_line(node.text[: end - node.start_byte])
    for suffix in ("=>", "{", "=", ";"):
        if text.endswith(suffix):
            text = text[: -len(suffix)].rstrip()
    if node.type == "variable_declarator":
        text += " =>"
    return clip(text, 300)


def _params(node: Node) -> list[Param]:
    target = node
    if node.type == "variable_declarator":
        target = node.child_by_field_name("value") or node
    plist = target.child_by_field_name("parameters")
    if plist is None:
        return []
    out: list[Param] = []
    for p in plist.named_children:
        if p.type in ("comment", "line_comment", "block_comment"):
            continue
        name_node = p.child_by_field_name("name") or p.child_by_field_name("pattern") or p.child_by_field_name("left")
        typ = p.child_by_field_name("type")
        default = p.child_by_field_name("value") or p.child_by_field_name("right")
        name = decode(name_node.text) if name_node is not None else one_line(p.text)
        ann = one_line(typ.text).lstrip(": ") if typ is not None else None
        out.append(Param(name, ann or None, clip(one_line(default.text), 80) if default is not None else None))
    return out


def _returns(node: Node) -> str | None:
    target = node.child_by_field_name("value") if node.type == "variable_declarator" else node
    if target is None:
        return None
    r = target.child_by_field_name("return_type") or target.child_by_field_name("result")
    if r is None and node.type == "method_declaration" and node.child_by_field_name("receiver") is None:
        r = node.child_by_field_name("type")  # Java
    return one_line(r.text).lstrip(": ") if r is not None else None


_COMMENTS = ("comment", "line_comment", "block_comment")


def _doc(node: Node) -> str:
    anchor = node
    while anchor.parent is not None and anchor.parent.type in (
        "export_statement", "variable_declarator", "lexical_declaration", "type_declaration"
    ):
        anchor = anchor.parent
    prev = anchor.prev_sibling
    lines: list[bytes] = []
    row = anchor.start_point[0]
    while prev is not None and prev.type in _COMMENTS and prev.end_point[0] >= row - 1:
        lines.append(prev.text)
        row = prev.start_point[0]
        prev = prev.prev_sibling
    if not lines:
        return ""
    text = b"\n".join(reversed(lines))
    cleaned = []
    for line in decode(text).splitlines():
        s = line.strip()
        for marker in ("/**", "/*!", "/*", "*/", "///", "//!", "//", "*"):
            if s.startswith(marker):
                s = s[len(marker):]
        if s.endswith("*/"):
            s = s[:-2]
        cleaned.append(s.strip())
    return first_line("\n".join(cleaned))


def _bases(node: Node) -> list[str]:
    out: list[str] = []
    for c in node.named_children:
        if c.type in ("class_heritage", "superclass", "super_interfaces", "extends_interfaces"):
            stack = [c]
            while stack:
                n = stack.pop()
                if n.type in ("identifier", "type_identifier", "member_expression", "scoped_type_identifier"):
                    out.append(decode(n.text))
                else:
                    stack.extend(reversed(n.named_children))
        elif c.type == "implements_clause":
            out.extend(decode(x.text) for x in c.named_children)
    if node.type == "impl_item" and node.child_by_field_name("trait") is not None:
        out.append(decode(node.child_by_field_name("trait").text))
    return out


def _is_constant(lang: str, node: Node, name: str) -> bool:
    if lang in ("javascript", "typescript", "tsx"):
        return node.children[0].type == "const" and name.isupper() and node.parent is not None and (
            node.parent.type in ("program", "export_statement")
        )
    if lang == "java":
        mods = next((c for c in node.children if c.type == "modifiers"), None)
        words = mods.text.split() if mods is not None else []
        return b"static" in words and b"final" in words
    return True


def extract_generic(lang: str, path: str, src: bytes, facts: FileFacts) -> None:
    """Fill `facts` for a non-Python file using the language's Spec."""
    spec = SPECS[lang]
    root = parser(lang).parse(src).root_node
    facts.is_test = is_test_path(path)
    caps = QueryCursor(query(lang, spec.query)).captures(root)
    defs: list[tuple[int, Definition]] = []
    parents: dict[int, Node] = {}
    scopes = _scopes(root, spec, {n.id for cap, nodes in caps.items() if cap.startswith("def.") for n in nodes},
                     parents)
    for cap, nodes in caps.items():
        if not cap.startswith("def."):
            continue
        kind = cap[4:]
        for node in nodes:
            scope, local = scopes[node.id]
            if local:
                continue
            name_node = node.child_by_field_name("name")
            if name_node is None:
                continue
            name = decode(name_node.text)
            if kind == "type" and node.type in spec.extra_kinds:
                kind_here = spec.extra_kinds[node.type](node)
            else:
                kind_here = kind
            if node.type == "method_declaration" and lang == "go":
                recv = node.child_by_field_name("receiver")
                rtype = next((decode(x.text) for x in _walk_types(recv)), "") if recv is not None else ""
                scope = [rtype] if rtype else []
            if kind_here == "function" and scope:
                kind_here = "method"
            defs.append((node.start_byte, Definition(
                name=name,
                qualname=".".join([*scope, name]),
                kind=kind_here,
                line=node.start_point[0] + 1,
                end_line=node.end_point[0] + 1,
                signature=_signature(node),
                params=_params(node),
                returns=_returns(node),
                bases=_bases(node),
                doc=_doc(_Located(node, parents)),
                is_async=any(c.type == "async" for c in (node.child_by_field_name("value") or node).children),
                exported=spec.exported(_Located(node, parents), name),
            )))
    defs.sort(key=lambda x: (x[0], x[1].qualname))
    facts.definitions = [d for _, d in defs]
    for node in sorted(caps.get("import", ()), key=lambda n: n.start_byte):
        facts.imports.extend(spec.imports(node))
    uses = facts.uses
    for node in caps.get("call", ()):
        name = decode(node.text)
        uses[name] = uses.get(name, 0) + 1
        if name == "require" and lang in ("javascript", "typescript", "tsx"):
            args = node.parent.child_by_field_name("arguments")
            if args is not None and args.named_child_count == 1 and args.named_children[0].type == "string":
                mod = decode(args.named_children[0].text).strip("'\"`")
                facts.imports.append(Import(mod, None, None, 0, node.start_point[0] + 1, mod))
    for node in caps.get("type", ()):
        name = decode(node.text)
        uses[name] = uses.get(name, 0) + 1
    for imp in facts.imports:
        if imp.name and imp.name not in ("*", "default"):
            uses[imp.name] = uses.get(imp.name, 0) + 1
    facts.imports.sort(key=lambda i: (i.line, i.module, i.name or ""))
    const_nodes = caps.get("const", ())
    const_names = caps.get("const.name", ())
    for name_node in const_names:
        decl = name_node.parent
        while decl is not None and decl not in const_nodes:
            decl = decl.parent
        if decl is None:
            continue
        name = decode(name_node.text)
        _, local = _scope(decl, spec)
        if local or not _is_constant(lang, decl, name):
            continue
        value = name_node.parent.child_by_field_name("value") or decl.child_by_field_name("value")
        typ = decl.child_by_field_name("type")
        facts.constants.append(Constant(name, decl.start_point[0] + 1, one_line(typ.text) if typ is not None else None,
                                        clip(one_line(value.text), 80) if value is not None else ""))
    facts.constants.sort(key=lambda c: (c.line, c.name))
    conv = facts.conv
    for d in facts.definitions:
        key = f"name_{'class' if d.kind in ('class', 'struct', 'interface', 'enum', 'trait', 'type') else 'fn'}_"
        style = naming_style(d.name.lstrip("_"))
        if style:
            conv[key + style] = conv.get(key + style, 0) + 1
        counter = "funcs" if d.kind in ("function", "method", "constructor") else "classes"
        conv[counter] = conv.get(counter, 0) + 1
        doc_key = "doc_" + ("plain" if d.doc else "none")
        conv[doc_key] = conv.get(doc_key, 0) + 1
    facts.errors = len(caps.get("error", ())) + (1 if root.has_error and not caps.get("error") else 0)
    line_style(src, conv)
    facts.uses = dict(sorted(uses.items()))  # capture order varies between processes; keep output canonical


def _walk_types(node: Node):
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "type_identifier":
            yield n
        stack.extend(reversed(n.named_children))
