"""Build the real text corpus of `vecshard bench --workload hybrid-quality` and docs/hybrid.md.

The documents are the docstrings of Python's standard library (modules, public classes, functions
and methods of the modules in MODULES), extracted once with `inspect.getdoc` and committed as
bench/data/stdlib_docs/docs.jsonl; the hand-written queries beside them name documents by their
dotted name. Run it again only to rebuild the file (the docstrings depend on the Python version:
the README in that folder records the one used):

    python -m vecshard_server.bench.build_stdlib_corpus [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import warnings
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data" / "stdlib_docs"
MIN_DOC_CHARS = 60  # shorter docstrings ("Return self+value.") say too little to search for

MODULES = (
    "abc bdb binascii builtins cmd code codeop compileall contextvars cProfile dbm doctest email.parser "
    "filecmp fileinput getopt http.cookiejar keyword linecache netrc optparse pdb pstats pty py_compile "
    "pyclbr runpy site symtable trace tty urllib.robotparser venv wave xml.sax xmlrpc.client xmlrpc.server "
    "zipapp zipimport argparse array ast asyncio base64 bisect bz2 calendar cmath codecs collections "
    "collections.abc colorsys concurrent.futures configparser contextlib copy csv ctypes dataclasses datetime "
    "decimal difflib dis email.message email.utils enum errno fnmatch fractions ftplib functools gc getpass "
    "gettext glob graphlib gzip hashlib heapq hmac html html.parser http.client http.cookies http.server "
    "imaplib importlib importlib.resources inspect io ipaddress itertools json locale logging "
    "logging.handlers lzma mailbox math mimetypes mmap multiprocessing numbers operator os os.path pathlib "
    "pickle pkgutil platform plistlib poplib pprint queue quopri random re reprlib sched secrets select "
    "selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl stat statistics string "
    "struct subprocess sys sysconfig tarfile tempfile textwrap threading time timeit token tokenize tomllib "
    "traceback tracemalloc types typing unicodedata unittest unittest.mock urllib.parse urllib.request uuid "
    "warnings weakref webbrowser wsgiref.simple_server xml.dom.minidom xml.etree.ElementTree zipfile zlib "
    "zoneinfo"
).split()


def _own(obj: Any, module: str) -> bool:
    """Whether `obj`, found in `module`, is documented there (not a re-export of another public module)."""
    owner = getattr(obj, "__module__", None) or module
    top = module.split(".")[0]
    return owner == module or owner.startswith((module + ".", "_", top)) or owner == "posix"


def _is_routine(obj: Any) -> bool:
    return inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethoddescriptor(obj) or inspect.ismethod(obj)


def extract() -> list[dict[str, Any]]:
    """Every docstring of MIN_DOC_CHARS or more, first occurrence of each text only, in a stable order."""
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []

    def add(name: str, kind: str, obj: Any) -> None:
        doc = (inspect.getdoc(obj) or "").strip()
        if len(doc) >= MIN_DOC_CHARS and doc not in seen:
            seen.add(doc)
            rows.append({"id": len(rows), "name": name, "kind": kind, "doc": doc})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules and aliases (typing.io) warn on access
        for mod_name in MODULES:
            module = importlib.import_module(mod_name)
            add(mod_name, "module", module)
            for attr in sorted(dir(module)):
                obj = getattr(module, attr, None)
                if attr.startswith("_") or obj is None or not _own(obj, mod_name):
                    continue
                if inspect.isclass(obj):
                    add(f"{mod_name}.{attr}", "class", obj)
                    for meth in sorted(vars(obj)):
                        member = getattr(obj, meth, None)
                        if not meth.startswith("_") and _is_routine(member):
                            add(f"{mod_name}.{attr}.{meth}", "method", member)
                elif _is_routine(obj):
                    add(f"{mod_name}.{attr}", "function", obj)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR / "docs.jsonl")
    args = parser.parse_args()
    rows = extract()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    chars = sum(len(r["doc"]) for r in rows)
    print(f"{len(rows)} documents, {chars:,} characters, Python {sys.version.split()[0]} -> {args.out}")


if __name__ == "__main__":
    main()
