"""README.md runs as written, top to bottom, and names only what the code has.

The README's fenced blocks, in order:

- ```python blocks run in this process, each in a fresh namespace (so each snippet shows its own
  imports), with `localhost:50051` replaced by the address of one `vecshard serve` started here.
- ```bash / ```sh blocks run with `bash -euo pipefail` in one temporary working directory (the
  Python blocks run there too), the venv's bin first on PATH and VECSHARD_ADDRESS set to that server.
- ```toml blocks must parse with tomllib (a model registry must also validate as one); ```text and
  plain ``` blocks (diagrams) are not run. Any other language fails here until this test learns it.

A marker on the line right before a fence changes that:

- `<!-- readme-test: skip — REASON -->`: not run (the reason is required). The skipped
  `vecshard serve` block gives the arguments this test starts its server with (plus `--port 0` and
  a temporary `--data-dir`).
- `<!-- readme-test: output -->` before a ```text block: the stdout of the block before it must match
  it line by line (runs of spaces are alike, and any decimal number matches any decimal number).

Besides running: the API table lists every RPC of `vecshard.v1.VectorSearch`; every `vecshard ...`
command line and every option the README names exists in the CLI (the `serve` options line lists
exactly serve's options); every VECSHARD_* variable it names is read by the code; its links and
repository paths exist.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PROTO = ROOT / "proto" / "vecshard" / "v1" / "vector_search.proto"
SERVER_PKG = ROOT / "server" / "vecshard_server"
BIN = Path(sys.executable).parent  # the venv's bin: `vecshard`, `python`
README_ADDRESS = "localhost:50051"
RUNS = {"python", "bash", "sh"}
SHOWN = {"toml", "text", ""}  # shown, never run
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*([\w-]+)\s*[—–:-]*\s*(.*?)\s*-->\s*$")
SERVING = re.compile(r"vecshard is serving on (\S+) ")
SHELL_START = {"vecshard", "pip", "python", "python3"}


@dataclass(frozen=True)
class Block:
    index: int  # 1-based, in README order, counting every fenced block
    lang: str
    line: int  # README line of the opening fence; the code starts on the next line
    code: str
    marker: str = ""  # "skip", "output", ... as written (test_every_block_... refuses unknown ones)
    reason: str = ""

    def where(self) -> str:
        first = next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")
        return f"README block #{self.index} (```{self.lang}, README.md line {self.line}, first line {first!r})"


def parse(text: str) -> tuple[list[Block], str]:
    """The fenced blocks, and the text outside them (block lines blanked, so line numbers hold)."""
    lines = text.splitlines()
    prose = list(lines)
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        found = FENCE.match(lines[i])
        if not found:
            i += 1
            continue
        fence, lang = found.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        assert end is not None, f"README.md line {i + 1}: the ``` fence is never closed"
        marker = MARKER.match(lines[i - 1]) if i else None
        blocks.append(
            Block(
                index=len(blocks) + 1,
                lang=lang.lower(),
                line=i + 1,
                code="\n".join(lines[i + 1 : end]) + "\n",
                marker=marker.group(1) if marker else "",
                reason=marker.group(2) if marker else "",
            )
        )
        prose[i : end + 1] = [""] * (end + 1 - i)
        i = end + 1
    return blocks, "\n".join(prose)


def _readme() -> tuple[list[Block], str]:
    return parse(README.read_text())


def _spans(prose: str) -> list[tuple[int, str]]:
    """Inline code spans of the prose, with their README line numbers (a span may wrap a line)."""
    return [
        (prose.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split()))
        for m in re.finditer(r"`([^`\n]+(?:\n[^`\n]+)?)`", prose)
    ]


# --- the blocks are all accounted for ---------------------------------------------------------


def test_every_block_is_run_shown_or_skipped_with_a_reason() -> None:
    blocks, _ = _readme()
    problems = []
    for i, b in enumerate(blocks):
        if b.marker not in {"", "skip", "output"}:
            problems.append(f"{b.where()}: unknown marker readme-test: {b.marker} (skip or output)")
        elif b.marker == "skip" and not b.reason:
            problems.append(f"{b.where()}: a skip needs a reason: <!-- readme-test: skip — why -->")
        elif b.marker == "output":
            before = blocks[i - 1] if i else None
            if b.lang != "text" or before is None or before.lang not in RUNS or before.marker == "skip":
                problems.append(f"{b.where()}: an output marker goes on a ```text block right after a block that runs")
        elif not b.marker and b.lang not in RUNS | SHOWN:
            problems.append(f"{b.where()}: ```{b.lang} is neither run nor shown; mark it or teach tests/test_readme.py")
    assert not problems, "\n".join(problems)
    assert sum(b.lang in RUNS and not b.marker for b in blocks) >= 4, "the README's examples went missing"
    _serve_arguments(blocks)


def _serve_arguments(blocks: list[Block]) -> list[str]:
    """The arguments of the README's (skipped) `vecshard serve` block, less --port and --data-dir."""
    serve = [b for b in blocks if b.marker == "skip" and b.code.lstrip().startswith("vecshard serve")]
    assert len(serve) == 1, "the README needs exactly one skipped `vecshard serve` block: the test's server follows it"
    lines = [ln for ln in serve[0].code.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{serve[0].where()}: one command line expected"
    words, args = shlex.split(lines[0], comments=True)[2:], []
    while words:
        word = words.pop(0)
        if word.split("=")[0] in {"--port", "--data-dir"}:
            if "=" not in word and words:
                words.pop(0)
        else:
            args.append(word)
    return args


def test_toml_blocks_parse() -> None:
    from vecshard_server.embedding.registry import Registry

    blocks, _ = _readme()
    tomls = [b for b in blocks if b.lang == "toml"]
    assert tomls
    for b in tomls:
        try:
            data = tomllib.loads(b.code)
            if "models" in data:  # a model registry: the keys must be the registry's (paths are not checked)
                Registry.model_validate(data)
        except Exception as err:
            pytest.fail(f"{b.where()} is not valid: {err}", pytrace=False)


# --- what the README names exists -------------------------------------------------------------


def test_api_table_lists_every_public_rpc() -> None:
    service = re.search(r"service VectorSearch \{(.*?)\n\}", PROTO.read_text(), flags=re.S)
    assert service is not None
    rpcs = set(re.findall(r"^\s*rpc (\w+)\(", service.group(1), flags=re.M))
    _, prose = _readme()
    section = prose.split("\n## API", 1)[1].split("\n## ", 1)[0]
    rows = [ln.split("|")[1] for ln in section.splitlines() if ln.startswith("| `")]
    listed = {name for cell in rows for name in re.findall(r"`(\w+)`", cell)}
    assert listed == rpcs, (
        f"missing from the README's API table: {sorted(rpcs - listed)}; not RPCs: {sorted(listed - rpcs)}"
    )


def _cli() -> click.Group:
    from vecshard_server.cli.main import cli

    return cli


def _options(command: click.Command) -> dict[str, click.Parameter]:
    return {name: p for p in command.params for name in (*p.opts, *p.secondary_opts) if name.startswith("-")}


def _all_commands(command: click.Command) -> list[click.Command]:
    subs = command.commands.values() if isinstance(command, click.Group) else []
    return [command, *(c for sub in subs for c in _all_commands(sub))]


def _words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose: not a command line
        return []


def _check_vecshard_line(words: list[str]) -> list[str]:
    """Problems with one `vecshard ...` command line (words after `vecshard`, up to |, && or ;)."""
    command: click.Command = _cli()
    path, problems, takes_value = ["vecshard"], [], False
    for word in words:
        if takes_value:
            takes_value = False
        elif re.match(r"^--?[a-zA-Z]", word):
            name = word.split("=")[0]
            param = _options(command).get(name)
            if param is None and name not in {"-h", "--help"}:
                problems.append(f"`{' '.join(path)}` has no option {name}")
            takes_value = isinstance(param, click.Option) and not param.is_flag and not param.count and "=" not in word
        elif isinstance(command, click.Group):
            sub = command.commands.get(word)
            if sub is None:
                return [*problems, f"`{' '.join(path)}` has no command {word!r}"]
            command = sub
            path.append(word)
    return problems


def test_every_command_and_option_named_exists() -> None:
    blocks, prose = _readme()
    every_option = {name for c in _all_commands(_cli()) for name in _options(c)} | {"-h", "--help"}
    problems: list[str] = []
    code_lines = [
        (b.line + 1 + n, ln, True) for b in blocks if b.lang in RUNS for n, ln in enumerate(b.code.splitlines())
    ]
    for line_no, text, in_block in code_lines + [(n, span, False) for n, span in _spans(prose)]:
        words = _words(text)
        starts = [i for i, w in enumerate(words) if w == "vecshard" and (i == 0 or words[i - 1] in {"|", "&&", ";"})]
        for i in starts:
            rest = words[i + 1 :]
            rest = rest[: next((n for n, w in enumerate(rest) if w in {"|", "&&", "||", ";", "&"}), len(rest))]
            problems += [f"README.md line {line_no}: {p}" for p in _check_vecshard_line(rest)]
        if not in_block and not starts and words and words[0] not in SHELL_START:
            # a lone option in the prose ("`--method tsne`"): some vecshard command must have it
            for w in words:
                if re.match(r"^--[a-zA-Z]", w) and w.split("=")[0] not in every_option:
                    problems.append(f"README.md line {line_no}: no vecshard command has {w.split('=')[0]}")
    # The paragraph after the `vecshard serve` block lists serve's options: all of them, and only those.
    serve_block = next(b for b in blocks if b.code.lstrip().startswith("vecshard serve"))
    paragraphs = "\n".join(prose.splitlines()[serve_block.line :]).split("\n\n")
    options = next(p for p in paragraphs if p.strip().startswith("Options:")).split(". ")[0]
    listed = set(re.findall(r"`(--[\w-]+)", options))
    serve = {n for n in _options(_cli().commands["serve"]) if n.startswith("--")} - {"--help"}
    if listed != serve:
        problems.append(f"the serve options line lacks {sorted(serve - listed)} and names {sorted(listed - serve)}")
    assert not problems, "\n".join(problems)


def test_every_variable_path_and_link_named_exists() -> None:
    from vecshard_server.common.config import Settings

    text = README.read_text()
    _, prose = _readme()
    code = "\n".join(p.read_text() for d in ("server", "client") for p in (ROOT / d).rglob("*.py"))
    known = {f"VECSHARD_{name.upper()}" for name in Settings.model_fields}
    problems = [
        f"{var} is read nowhere in server/ or client/"
        for var in sorted(set(re.findall(r"\bVECSHARD_[A-Z0-9_]*[A-Z0-9]\b", text)))
        if var not in known and var not in code
    ]
    top = {p.name for p in ROOT.iterdir()}
    for line_no, span in _spans(prose):
        if " " not in span and "/" in span and span.split("/")[0] in top and not (ROOT / span).exists():
            problems.append(f"README.md line {line_no}: `{span}` does not exist")
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", text):
        if "://" not in target and not (ROOT / target).exists():
            problems.append(f"README link {target} points nowhere")
    # The layout row of the server package: its folders are the package's, and the modules named exist.
    row = next(ln for ln in text.splitlines() if ln.startswith("| `server/vecshard_server/`"))
    folders = {p.parent.name for p in SERVER_PKG.glob("*/__init__.py")}
    folder: Path | None = None
    named = set()
    for token in re.findall(r"`([\w/]+)`", row.split("|")[2]):
        if token.endswith("/"):
            folder = SERVER_PKG / token.rstrip("/")
            named.add(folder.name)
            if not folder.is_dir():
                problems.append(f"layout: server/vecshard_server/{token} does not exist")
        elif folder is not None and not (folder / f"{token}.py").exists() and not (folder / token).is_dir():
            problems.append(f"layout: server/vecshard_server/{folder.name}/{token}.py does not exist")
    if named != folders:
        problems.append(f"layout: the server row lacks {sorted(folders - named)} and names {sorted(named - folders)}")
    assert not problems, "\n".join(problems)


# --- the README runs --------------------------------------------------------------------------


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _start_serve(args: list[str], tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    log = tmp / "serve.log"
    command = [sys.executable, "-m", "vecshard_server", "serve", *args, "--port", "0", "--data-dir", str(tmp / "data")]
    with log.open("wb") as out:  # a file, not a pipe: nobody has to drain it while the blocks run
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = SERVING.search(log.read_text(errors="replace"))
        if found:
            return proc, found.group(1), log
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    pytest.fail(f"`{' '.join(command)}` did not start:\n{_tail(log)}", pytrace=False)


def _run_python(block: Block, address: str) -> str:
    # Padded so that the code's line numbers are the README's: tracebacks point at README.md lines.
    source = "\n" * block.line + block.code.replace(README_ADDRESS, address)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, str(README), "exec"), {"__name__": "__readme__"})  # noqa: S102
    except Exception as err:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == str(README)]
        raise BlockFailed(
            block, "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(err))
        ) from None
    return out.getvalue()


def _run_shell(block: Block, address: str, env: dict[str, str], cwd: Path) -> str:
    # Padded like the Python blocks, so that the trace lines give README line numbers (bash run as root
    # ignores PS4 from the environment, hence set here).
    trace = "PS4='+ README.md line ${LINENO}: '; set -x"
    script = trace + "\n" * block.line + block.code.replace(README_ADDRESS, address)
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired as err:
        raise BlockFailed(block, f"still running after {err.timeout:.0f} s") from None
    if result.returncode != 0:
        stderr = "\n".join(result.stderr.splitlines()[-30:])
        stdout = "\n".join(result.stdout.splitlines()[-15:])
        raise BlockFailed(
            block,
            f"exit code {result.returncode}\n--- stderr (last lines):\n{stderr}\n--- stdout (last lines):\n{stdout}",
        )
    return result.stdout


def _line_pattern(expected: str) -> str:
    """A regex for one expected output line: runs of spaces alike, any decimal number for a decimal number."""
    words = []
    for word in expected.split():
        parts = re.split(r"(-?\d+\.\d+)", word)
        words.append("".join(r"-?\d+\.\d+" if n % 2 else re.escape(p) for n, p in enumerate(parts)))
    return r"\s+".join(words)


def _check_output(block: Block, expected: Block, actual: str) -> None:
    want = expected.code.strip("\n").splitlines()
    got = actual.strip("\n").splitlines()
    if len(want) != len(got) or not all(
        re.fullmatch(_line_pattern(w), g.strip()) for w, g in zip(want, got, strict=False)
    ):
        raise BlockFailed(
            block,
            f"its output differs from the ```text block at README.md line {expected.line}\n--- README shows:\n"
            + "\n".join(want)
            + "\n--- it printed:\n"
            + "\n".join(got),
        )


class BlockFailed(Exception):
    def __init__(self, block: Block, detail: str) -> None:
        super().__init__(f"{block.where()} failed:\n{detail}")


@pytest.mark.timeout(300)
def test_readme_runs_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks, _ = _readme()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECSHARD_")}
    proc, address, log = _start_serve(_serve_arguments(blocks), tmp_path, env)
    env |= {"VECSHARD_ADDRESS": address, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    timings, failure = [], ""
    try:
        last: tuple[Block, str] | None = None
        for block in blocks:
            if block.marker == "output":
                assert last is not None  # checked by test_every_block_is_run_shown_or_skipped_with_a_reason
                _check_output(last[0], block, last[1])
                continue
            last = None
            if block.marker == "skip" or block.lang not in RUNS:
                continue
            start = time.monotonic()
            run = _run_python(block, address) if block.lang == "python" else _run_shell(block, address, env, work)
            timings.append(f"#{block.index} {time.monotonic() - start:.1f}s")
            last = (block, run)
    except BlockFailed as err:
        failure = f"{err}\n--- vecshard serve log (last lines):\n{_tail(log, 12)}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if failure:  # outside the except clause: one clean message, no chained tracebacks
        pytest.fail(failure, pytrace=False)
    print("README blocks:", ", ".join(timings))
    assert proc.returncode == 0, f"vecshard serve did not stop cleanly on SIGTERM:\n{_tail(log)}"
