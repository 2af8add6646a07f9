"""Conformance suites that fb runs on its own plugins and that plugin authors run on theirs.

They need pytest and hypothesis (``pip install 'file-backed[test]'``):

- `fb.testing.codecs.CodecConformance`: what every codec must do.
- `fb.testing.backends.BackendSuite` and `fb.testing.backends.PersistSuite`: what every
  storage backend must do.
"""

from .codecs import CodecConformance as CodecConformance

__all__ = ["CodecConformance"]
