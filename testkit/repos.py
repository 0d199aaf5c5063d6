"""Git repositories for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path


def make_git_repo(root: Path, files: dict[str, str], message: str = "initial") -> str:
    """Create a git repository at `root` with `files` committed; return the commit SHA."""
    import git

    root.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.com")
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    repo.git.add(A=True)
    return repo.index.commit(message).hexsha


SAMPLE_FILES = {
    "shapes/__init__.py": "from .geometry import area_of_circle, Rectangle\n",
    "shapes/geometry.py": (
        "import math\n\nPI2 = math.pi * 2\n\n\n"
        "def area_of_circle(radius: float) -> float:\n    \"\"\"Area of a circle.\"\"\"\n    return math.pi * radius ** 2\n\n\n"
        "class Rectangle:\n    \"\"\"An axis-aligned rectangle.\"\"\"\n\n"
        "    def __init__(self, width: float, height: float) -> None:\n        self.width = width\n        self.height = height\n\n"
        "    def area(self) -> float:\n        return self.width * self.height\n"
    ),
    "tests/test_geometry.py": (
        "from shapes.geometry import Rectangle, area_of_circle\n\n\n"
        "def test_rectangle():\n    assert Rectangle(2, 3).area() == 6\n"
    ),
}
