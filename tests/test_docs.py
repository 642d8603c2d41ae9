"""Every command in README.md and docs/*.md runs, as a reader would run it.

What runs: fenced blocks tagged `sh`, `bash`, `shell` or `console` (its `$ ` lines), and `python`
blocks. Other fences (json, js, text, ...) are shown, not run. Each page is one test: its blocks
run in order, each in its own `bash -euo pipefail -c BLOCK` (python blocks: `python -` with the
block on stdin), all in one fresh working directory per page, and each must exit 0.

The working directory is a temp dir whose entries are symlinks to the repository's tracked
top-level files and directories (plus `.venv` and `.venv-train`). To a command it is the root of
a fresh clone: blocks use the relative paths a reader types in their checkout
(`make bundle MODEL=model/examples/wine/v2 OUT=build/wine`, `python -m job`). What they write
(`build/`, keys, stores, tokens) lands in the temp dir, so a run leaves nothing in the checkout,
and nothing an earlier run left there (an old `build/`) can make a block pass. The repository root
itself was not chosen for that reason; an empty directory was not chosen because the commands
name repository paths, as a reader's would.

Environment: `PATH` starts with `.venv/bin` (what `source .venv/bin/activate` gives a reader);
`HOME` is a temp dir (no `~/.aws` or caches of this machine); `CI=true`, stdin is empty. The
project's own variables (`AWS_*`, `PREDICT_JOB_*`, `RELOADER_*`, `MODEL_STORE_*`) are removed
first; then a page whose runnable blocks use `s3://` gets a real SeaweedFS S3 server through the
variables `aws s3 cp` reads (`AWS_ENDPOINT_URL`, keys, region), with the buckets its URLs name
present and the prefixes they name empty. The install markers of `make setup` are fresh in the
temp dir (see `_mirror`), so `make bundle` or `make run` never starts an install: the test runs
the docs against the environment `make setup setup-train` made, it does not re-make it.

Markers: an HTML comment on the line before a fence (blank lines between are allowed):

    <!-- not run: REASON -->      not run; each one is a skipped test item whose reason names the
                                  page, line and REASON, so `-ra` (the project's default) lists
                                  them all in every run
    <!-- background: port N -->   a server: started in the background (its own process group),
                                  ready once 127.0.0.1:N accepts connections, stopped with
                                  SIGTERM to that group when the page is done (SIGKILL after 10 s)
    <!-- exit: N -->              must exit with N instead of 0 (a documented failure)
    <!-- python: train -->        a python block run by the train venv's interpreter (the
                                  `train_python` fixture: $TRAIN_PYTHON, else
                                  .venv-train/bin/python); the page's test is marked `train`

Streaming commands are bounded in the docs themselves (`--records 2000 --rate 0`), so what a
reader copies is what ran here. The cheap checks (markers well formed, links resolve, README
under 8 KB, no reference to a design document outside the repository) are not `slow`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import processes

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
RUN = SHELL | {"python"}
BLOCK_TIMEOUT = 900.0  # `make run` streams for 40 s after building and starting Flink
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0  # a background server: SIGTERM to its group, SIGKILL after this
# Variables of the project and of the AWS tools: a reader's shell has none of ours.
ISOLATED = ("AWS_", "PREDICT_JOB_", "RELOADER_", "MODEL_STORE_", "TRAIN_PYTHON", "MAKEFLAGS")
# Files the temp checkout holds as real files, not symlinks (see `_mirror`): the install markers
# `make setup setup-train` leaves behind (fresh copies, so `make` never starts an install).
REAL_FILES = {
    ".venv/.installed",
    ".venv-train/.installed",
    "model/node_modules/.package-lock.json",
}

_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*(not run|background|exit|python)\s*:\s*(.*?)\s*-->$")
_S3_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[\w./-]*)?")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUN and "not run" not in self.markers

    @property
    def script(self) -> str:
        if self.lang != "console":
            return self.code
        return "\n".join(ln[2:] for ln in self.code.splitlines() if ln.startswith("$ "))


def parse_page(page: Path) -> list[Block]:
    """The fenced blocks of a page, each with the markers on the lines before its fence."""
    blocks: list[Block] = []
    lines = page.read_text().splitlines()
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        marker = _MARKER.match(text)
        fence = _FENCE.match(lines[i])
        if marker:
            pending[marker.group(1)] = marker.group(2)
        elif fence:
            start, ticks, lang = i, fence.group(1), fence.group(2).lower()
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != ticks:
                body.append(lines[i])
                i += 1
            blocks.append(Block(page, start + 1, lang, "\n".join(body) + "\n", pending))
            pending = {}
        elif text and pending:
            raise ValueError(f"{page.name}:{i + 1}: a marker must come right before a fence")
        i += 1
    return blocks


def _blocks() -> list[Block]:
    return [b for page in PAGES for b in parse_page(page)]


# -- cheap checks ---------------------------------------------------------------------------------


def test_markers_are_well_formed() -> None:
    blocks = _blocks()
    assert blocks, "no fenced blocks found"
    for b in blocks:
        if "not run" in b.markers:
            assert len(b.markers["not run"]) >= 10, f"{b.where}: say why it is not run"
        if "background" in b.markers:
            assert re.fullmatch(r"port \d+", b.markers["background"]), b.where
        if "exit" in b.markers:
            assert b.markers["exit"].isdigit(), b.where
        if "python" in b.markers:
            assert b.markers["python"] == "train" and b.lang == "python", b.where
        if b.markers and b.lang not in RUN:
            pytest.fail(f"{b.where}: a marker on a ```{b.lang} block, which never runs")


def test_readme_is_an_introduction() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size < 8192, f"README.md is {size} bytes; move detail into docs/"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a page (outside fenced blocks)."""
    anchors, fence = set(), None
    for line in page.read_text().splitlines():
        if m := _FENCE.match(line):
            fence = None if fence == m.group(1) else fence or m.group(1)
        elif fence is None and (h := re.match(r"#{1,6}\s+(.*)", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", h.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_links_resolve_and_no_outside_design_doc() -> None:
    link = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)")
    for page in PAGES:
        text = page.read_text()
        assert "DESIGN" not in text, f"{page.name}: refers to a design document not in the repo"
        for target, anchor in link.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path = (page.parent / target) if target else page
            assert path.exists(), f"{page.name}: broken link {target}"
            if anchor:
                assert anchor in _anchors(path), f"{page.name}: no #{anchor} in {target}"


_NOT_RUN = [b for b in _blocks() if b.lang in RUN and "not run" in b.markers]


@pytest.mark.parametrize("block", _NOT_RUN, ids=[b.where for b in _NOT_RUN])
def test_not_run(block: Block) -> None:
    """One skipped item per block the docs mark as not run, so every run lists them."""
    first = block.script.strip().splitlines()[0]
    pytest.skip(f"not run: {block.where} `{first}`: {block.markers['not run']}")


# -- running the pages ----------------------------------------------------------------------------


def _page_params() -> list[Any]:
    params = []
    for page in PAGES:
        blocks = [b for b in parse_page(page) if b.runs]
        if not blocks:
            continue
        marks = [pytest.mark.slow]
        if any(b.markers.get("python") == "train" for b in blocks):
            marks.append(pytest.mark.train)
        params.append(pytest.param(page, marks=marks, id=str(page.relative_to(ROOT))))
    return params


@pytest.mark.parametrize("page", _page_params())
def test_page_commands_run(page: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    blocks = [b for b in parse_page(page) if b.runs]
    train = any(b.markers.get("python") == "train" for b in blocks)
    train_python = request.getfixturevalue("train_python") if train else None
    work = _checkout(tmp_path / "work")
    env = _environment(tmp_path)
    s3_urls = [m for b in blocks for m in _S3_URL.findall(b.script)]
    if s3_urls:
        env.update(_s3_for(request, tmp_path, s3_urls))
    report = []
    with _background() as started:
        for block in blocks:
            t0 = time.monotonic()
            command = _command(block, train_python)
            if "background" in block.markers:
                port = int(block.markers["background"].split()[1])
                started.append(_start(block, command, work, env, port, tmp_path))
                out = ""
            else:
                out = _run(block, command, work, env)
            tail = "".join(f"\n           | {line}" for line in out.splitlines()[-3:])
            report.append(f"{time.monotonic() - t0:7.1f} s  {block.where}{tail}")
    # Seen with `-s`: what each block took and the end of what it printed.
    print(f"\n{page.name}: {len(blocks)} blocks\n" + "\n".join(report))


def _checkout(work: Path) -> Path:
    """A temp dir that looks like the root of a set-up clone (see the module docstring)."""
    work.mkdir()
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    names = {p.split("/", 1)[0] for p in tracked} | {".venv", ".venv-train"}
    for name in sorted(names):
        if (ROOT / name).exists():
            _mirror(ROOT / name, work / name, name)
    return work


def _mirror(src: Path, dst: Path, rel: str) -> None:
    """`dst` -> `src` as a symlink; a directory holding one of `REAL_FILES` becomes a real
    directory of symlinks instead, with a fresh copy of that file. The Makefile's install
    targets depend on `pyproject.toml` and `model/package*.json` by time stamp: with fresh
    markers this checkout is set up to make (as a reader's is after `make setup`), so no block
    starts an install, whoever edited those files last. (MAKEFLAGS cannot carry `-o FILE`.)"""
    if not any(m.startswith(rel + "/") for m in REAL_FILES):
        dst.symlink_to(src)
        return
    dst.mkdir()
    for entry in src.iterdir():
        sub = f"{rel}/{entry.name}"
        if sub in REAL_FILES:
            shutil.copyfile(entry, dst / entry.name)  # fresh: newer than what it depends on
        else:
            _mirror(entry, dst / entry.name, sub)


def _environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED)}
    (tmp / "home").mkdir()
    env.update(
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(ROOT / ".venv"),
        HOME=str(tmp / "home"),
        CI="true",
        FLINK_LOG_DIR=str(tmp / "flink-logs"),
    )
    env.pop("PYTHONPATH", None)
    return env


def _s3_for(
    request: pytest.FixtureRequest, tmp: Path, urls: list[tuple[str, str]]
) -> dict[str, str]:
    """The session's SeaweedFS with the buckets the URLs name, their prefixes emptied."""
    try:
        server = request.getfixturevalue("s3_session")
    except pytest.FixtureLookupError:  # no shared fixture: a server of our own for this page
        from tests.support.seaweed import start_seaweed

        server = start_seaweed(tmp / "seaweed", buckets=())
        request.addfinalizer(server.stop)
    client = server.client()
    for bucket, path in sorted(set(urls)):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        prefix = path.strip("/").split("/")[0] if path.strip("/") else ""
        for obj in client.list_objects(bucket, prefix=prefix or None, recursive=True):
            client.remove_object(bucket, obj.object_name)
    return dict(server.env())


def _command(block: Block, train_python: Path | None) -> list[str]:
    if block.lang == "python":
        if block.markers.get("python") == "train":
            assert train_python is not None, "the page's train blocks ask for `train_python`"
            return [str(train_python), "-"]
        return ["python", "-"]
    return ["bash", "-euo", "pipefail", "-c", block.script]


def _run(block: Block, command: list[str], work: Path, env: dict[str, str]) -> str:
    try:
        proc = subprocess.run(
            command,
            cwd=work,
            env=env,
            input=block.script if block.lang == "python" else "",
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{block.where} ran past {BLOCK_TIMEOUT:g} s:\n{block.script}\n{e.stdout!r}")
    expected = int(block.markers.get("exit", "0"))
    if proc.returncode != expected:
        pytest.fail(
            f"{block.where} exited {proc.returncode} (expected {expected}):\n{block.script}\n"
            f"--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


@dataclass
class _Server:
    block: Block
    proc: subprocess.Popen[bytes]
    log: Path


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start(
    block: Block, command: list[str], work: Path, env: dict[str, str], port: int, tmp: Path
) -> _Server:
    if _accepts(port):
        pytest.fail(f"{block.where}: port {port} is already in use here; the docs use it")
    log = tmp / f"background-{block.line}.log"
    proc = processes.start_group(command, log=log, cwd=work, env=env)
    server = _Server(block, proc, log)
    deadline = time.monotonic() + READY_TIMEOUT
    while not _accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            processes.stop_group(server.proc, timeout=STOP_TIMEOUT)
            pytest.fail(f"{block.where} did not listen on {port}:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)
    return server


@contextlib.contextmanager
def _background() -> Iterator[list[_Server]]:
    started: list[_Server] = []
    try:
        yield started
    finally:
        for server in reversed(started):
            processes.stop_group(server.proc, timeout=STOP_TIMEOUT)


def test_shell_blocks_use_only_known_tools() -> None:
    """The tools the runnable blocks call exist here (so a missing one fails fast and clearly)."""
    for tool in ("make", "node", "curl", "jq"):
        assert shutil.which(tool), f"{tool} is not installed"
