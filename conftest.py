"""Run the python blocks of README.md as tests (the pages of docs/ have their own conftest)."""

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md"],
    name="readme",
).pytest()
