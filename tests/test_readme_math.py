"""The README's "The mathematics, with adcore": every example runs.

The examples live twice: as doctests in adcore/drivers.py (shipped with the
package, so they run against the installed package) and in the README.  This
test runs the doctests and checks that the README shows exactly the same
examples (the README comes from the source tree beside the package, or from the
installed package's metadata, whose long description is the README).
"""

import doctest
import importlib.metadata
import pathlib
import re

import adcore
import adcore.drivers

SECTION = "## The mathematics, with adcore"
FLAGS = doctest.ELLIPSIS


def _readme_text():
    beside = pathlib.Path(adcore.__file__).resolve().parent.parent / "README.md"
    if beside.is_file() and SECTION in beside.read_text(encoding="utf-8"):
        return beside.read_text(encoding="utf-8")
    meta = importlib.metadata.metadata("adcore")
    body = meta.get_payload() or meta.get("Description") or ""
    return body


def _section(text):
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:] if end < 0 else text[start:end]


def _examples(source):
    parser = doctest.DocTestParser()
    return [(ex.source, ex.want, ex.exc_msg) for ex in parser.get_examples(source)]


def test_drivers_doctests_run():
    result = doctest.testmod(adcore.drivers, optionflags=FLAGS, verbose=False)
    assert result.failed == 0
    assert result.attempted >= 40


def test_readme_section_shows_the_same_examples():
    text = _readme_text()
    assert SECTION in text, "the README section is missing"
    blocks = re.findall(r"```pycon\n(.*?)```", _section(text), re.S)
    assert blocks, "the README section has no pycon blocks"
    readme = _examples("\n".join(blocks))
    module = _examples(adcore.drivers.__doc__)
    assert readme == module


def test_readme_examples_run_as_written():
    blocks = re.findall(r"```pycon\n(.*?)```", _section(_readme_text()), re.S)
    test = doctest.DocTestParser().get_doctest("\n".join(blocks), {}, "README", None, 0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 40
