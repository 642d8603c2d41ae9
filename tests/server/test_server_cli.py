"""`python -m server`: an expected failure is one line on stderr, not a stack trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import main


def test_an_unusable_root_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert main(["serve", "--root", str(tmp_path / "file" / "store")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot use") and "Not a directory" in err


@pytest.mark.parametrize("name", ["MODEL_STORE_PORT", "MODEL_STORE_MAX_BODY"])
def test_a_bad_number_in_the_environment_is_one_line(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, "lots")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--root", "unused"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: ${name} must be an integer, got 'lots'\n"
