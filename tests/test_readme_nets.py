"""The snippets of README.md's "Beyond a chain" section run as printed (issue 15)."""
import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_snippets(title):
    """The python blocks of the README section ``## title`` (up to the next ``## ``)."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_beyond_a_chain_snippets_run_as_printed(tmp_path, monkeypatch):
    snippets = _section_snippets("Beyond a chain")
    assert len(snippets) == 3
    monkeypatch.chdir(tmp_path)                 # CSVLogger writes history.csv here
    namespace = {"__name__": "readme"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for code in snippets:
            exec(compile(code, str(README), "exec"), namespace)
    printed = out.getvalue().splitlines()
    assert printed[0] == ("['body.0.W', 'body.1.gamma', 'body.1.beta', 'body.3.W', "
                          "'body.4.gamma', 'body.4.beta']")
    assert printed[1] == "['body.1.running_mean', 'body.1.running_var']"
    assert printed[2:4] == ["False", "True"]
    assert printed[4] == "(2, 8, 4, 4)"
    assert printed[5] == "272186"
    assert printed[6] == "['3.body.0.W', '3.body.1.gamma', '3.body.1.beta']"
    assert "top_3_accuracy" in "\n".join(printed)
    assert (tmp_path / "history.csv").read_text().count("\n") == 3
