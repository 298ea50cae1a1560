"""gunicorn.conf.py as gunicorn reads it."""

import runpy

from gunicorn.config import Config
from orbserver import ROOT


def test_sendfile_stays_enabled(monkeypatch):
    """Downloads go out by sendfile.

    The fault guarded: `sendfile = True` in gunicorn.conf.py, which
    gunicorn reads as --no-sendfile (any value there disables it), so
    every download was copied through Python in 1 MiB reads.
    """
    monkeypatch.delenv("SENDFILE", raising=False)
    namespace = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    config = Config()
    for name, value in namespace.items():
        if name in config.settings:
            config.set(name, value)

    assert config.worker_class_str == "gthread"
    assert config.sendfile is True
