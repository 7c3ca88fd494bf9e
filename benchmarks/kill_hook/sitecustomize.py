"""Pause point for benchmarks/kill_resume.py; not part of optical, never imported by it.

The kill harness puts this folder first on PYTHONPATH of the `python -m optical distill`
processes it starts, so Python imports this file at start-up (site's `sitecustomize`).
Without $OPTICAL_KILL_PAUSE it does nothing. With it, JSON

    {"dst": "<regex>", "src_text": "<optional exact text>", "nth": 1}

the process stops itself (SIGSTOP) right before the `nth` call of `os.replace` whose
destination path matches `dst` (and, with `src_text`, whose source file holds exactly that
text). The harness sees the stop and sends SIGKILL: a real kill -9 from outside, at a moment
too short to hit by timing (e.g. a new checkpoint folder in place, `latest` not yet replaced).
"""

import json
import os
import re
import signal

_SPEC = os.environ.get("OPTICAL_KILL_PAUSE")

if _SPEC:
    _spec = json.loads(_SPEC)
    _pattern = re.compile(_spec["dst"])
    _text = _spec.get("src_text")
    _nth = int(_spec.get("nth", 1))
    _seen = [0]
    _real_replace = os.replace

    def _matches(src, dst) -> bool:
        if not _pattern.search(os.fsdecode(os.fspath(dst))):
            return False
        if _text is None:
            return True
        try:
            with open(src, encoding="utf-8") as handle:
                return handle.read() == _text
        except (OSError, ValueError):
            return False

    def _replace(src, dst, *args, **kwargs):
        if _matches(src, dst):
            _seen[0] += 1
            if _seen[0] == _nth:
                os.kill(os.getpid(), signal.SIGSTOP)  # the harness kills us here
        return _real_replace(src, dst, *args, **kwargs)

    os.replace = _replace
