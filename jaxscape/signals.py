"""How a command ends: one line on stderr, never a traceback (unless asked), for signals and for errors.

SIGINT and SIGTERM end a command with a line saying what was saved, exit code
130 / 143; an error ends it with one line naming what was wrong
(:func:`error_exit`): exit code 2 for what the user can fix (bad input or
data, an output that cannot be written, a lock held by another run, too
little memory), 1 for an internal error (with a request to rerun with
``--debug`` for the traceback).

A Python signal handler runs in the main thread between two bytecodes, never
inside a running XLA computation (that finishes first). The handler installed
by :func:`interruptible` raises :class:`Interrupted` there, so the command
unwinds like on any error (temporary files removed, files closed) and every
result it has written stays the last complete one. Python that XLA calls back
into while it runs (``jax.debug.print``, ``io_callback``) is no safe point:
there the signal is sent again every 50 ms until the computation has
returned. The process then leaves
through :func:`exit_interrupted`: streams flushed, one line on stderr, and
``os._exit`` with ``128 + signal`` -- not through interpreter teardown, which
with XLA's threads still alive is where a ``KeyboardInterrupt`` used to end in
a segmentation fault. A second signal while unwinding ends the process at
once (with the same exit code): a run killed at any moment resumes anyway.

Example:
  >>> import os, signal
  >>> from jaxscape import signals
  >>> try:
  ...   with signals.interruptible():
  ...     os.kill(os.getpid(), signal.SIGTERM)
  ... except signals.Interrupted as e:
  ...   print(e.name, e.exit_code)
  SIGTERM 143
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Iterator, NoReturn

__all__ = ["Interrupted", "interruptible", "exit_interrupted", "error_exit", "SIGNALS"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals a command ends cleanly on."""


class Interrupted(BaseException):
  """Raised in the main thread at the first SIGINT or SIGTERM inside :func:`interruptible`.

  A ``BaseException`` (like ``KeyboardInterrupt``), so that ``except Exception``
  clauses of library code do not swallow it.
  """

  def __init__(self, signum: int):
    self.signum = int(signum)
    super().__init__(self.name)

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name

  @property
  def exit_code(self) -> int:
    """``128 + signal``: 130 for SIGINT, 143 for SIGTERM (the shell's convention)."""
    return 128 + self.signum


def _leave(code: int, line: str) -> NoReturn:
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):  # a closed or broken stream: nothing more to say there
      pass
  try:
    sys.stderr.write(line.rstrip("\n") + "\n")
    sys.stderr.flush()
  except (OSError, ValueError):
    pass
  os._exit(code)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
  """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`; a second one exits at once.

  Outside the main thread (where Python cannot install handlers) the block
  runs unchanged. The previous handlers are restored on leaving.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  raised: list[int] = []
  retries: list[threading.Timer] = []

  def handler(signum, frame):
    if raised:  # already unwinding: the user insists
      _leave(128 + signum, f"{signal.Signals(signum).name} again: exiting at once; results written so far are "
                           "complete and resume")
    if _inside_xla(frame):
      # Python called back from a running XLA computation (jax.debug.print, io_callback): an exception here
      # would come out as an XLA runtime error; the signal is sent again until XLA has returned.
      retry = threading.Timer(_RETRY_S, os.kill, (os.getpid(), signum))
      retry.daemon = True
      retries.append(retry)
      retry.start()
      return
    raised.append(signum)
    raise Interrupted(signum)

  previous = {s: signal.signal(s, handler) for s in SIGNALS}
  try:
    yield
  finally:
    for retry in retries:
      retry.cancel()
    for s, h in previous.items():
      signal.signal(s, h)


_RETRY_S = 0.05
_XLA_CALLBACK_FILES = tuple(os.path.join("jax", "_src", name) for name in ("callback.py", "debugging.py"))


def _inside_xla(frame: Any) -> bool:
  """Whether the interrupted Python code was called back from inside an XLA computation (JAX's host callbacks)."""
  while frame is not None:
    if frame.f_code.co_filename.endswith(_XLA_CALLBACK_FILES):
      return True
    frame = frame.f_back
  return False


def exit_interrupted(error: Interrupted, message: str) -> NoReturn:
  """Flushes stdout and stderr, writes ``message`` as one line on stderr and ends the process with ``128 + signal``."""
  _leave(error.exit_code, " ".join(message.split()))


def _describe(error: BaseException) -> str:
  """The error as one line: its message, or for a bare ``OSError`` its reason and the path."""
  if isinstance(error, OSError) and error.strerror:  # without the "[Errno N]" prefix
    return error.strerror + (f": {error.filename!r}" if error.filename is not None else "")
  if isinstance(error, MemoryError):
    return f"out of host memory ({error or 'an allocation failed'}); use a smaller grid, batch or model"
  return " ".join(str(error).split()) or type(error).__name__


def error_exit(prefix: str, error: Exception, *, debug: bool = False) -> int:
  """Writes ``error`` as one line ``"<prefix>: error: ..."`` on stderr and returns the exit code (or re-raises).

  ``ValueError`` (bad input, bad data, refused configs, corrupt files),
  ``OSError`` (unreadable input, unwritable output), the run lock's
  ``RuntimeError`` and ``MemoryError`` are the user's to fix: exit code 2.
  Anything else is a bug: exit code 1, with the exception's type and a
  request to rerun with ``--debug``. With ``debug`` the exception propagates
  (its traceback is printed).
  """
  if debug:
    raise error
  from .io import RunLockedError

  if isinstance(error, (ValueError, OSError, RunLockedError, MemoryError)):
    line, code = f"{prefix}: error: {_describe(error)}", 2
  else:
    line, code = (f"{prefix}: internal error ({type(error).__name__}: {_describe(error)}); rerun with --debug for "
                  "the traceback and report it"), 1
  try:
    sys.stdout.flush()
  except (OSError, ValueError):
    pass
  print(line, file=sys.stderr)
  return code
