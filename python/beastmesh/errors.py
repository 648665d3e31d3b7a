"""Errors: one class per BM_E* code, all under beastmesh.Error.

Every error carries the C code (`code`, negative), its symbolic name
(`name`, e.g. "BM_ENOAGENT") and bm_strerror()'s text.  The classes are made
from the library's own list, so a code added in C gets a class here too
(named from its BM_E* name) without a change to this file.
"""
import errno as _errno

from ._ffi import ffi, lib


class Error(Exception):
    """Any failure reported by beastmesh."""

    code = 0

    def __init__(self, *args, code=None, detail=None):
        # Error(code[, detail]) from the library; Error("text") from users.
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            code = args[0]
            args = args[1:]
        if args:
            detail = " ".join(str(a) for a in args)
        if code is None:
            code = type(self).code
        self.code = code
        self.name = ffi.string(lib.bm_err_name(code)).decode() if code else ""
        self.text = ffi.string(lib.bm_strerror(code)).decode() if code else ""
        self.detail = detail
        msg = self.text
        if detail:
            msg = "%s: %s" % (detail, self.text) if self.text else detail
        super().__init__(msg)


class DeadLetter(Error):
    """The message died in the sender's outbox: `reason` says why (TTL,
    attempts used up, too large, or the receiver's permanent NACK) and
    `dead_code` is the outbox's code for it; `refusal` is the last NACK's
    text, written by the side that refused it (the receiver, its beastd, a
    remote host's bridge), "" when none came.  `beast outbox dead` lists it
    and `beast outbox requeue` revives it."""

    def __init__(self, dead_code, message_id=None, refusal=""):
        self.dead_code = dead_code
        self.reason = ffi.string(lib.bm_outbox_reason(dead_code)).decode()
        self.refusal = refusal  # the last NACK's text, from the side that refused
        self.message_id = message_id
        if dead_code < 0:
            code = dead_code  # the receiver's or broker's permanent NACK
        else:
            code = {1: _BY_NAME["TTL"].code, 3: _BY_NAME["TOOBIG"].code}.get(
                dead_code, -_errno.ETIMEDOUT)  # 2: every attempt went unacknowledged
        why = self.reason + ("; last refusal: " + refusal if refusal else "")
        super().__init__(code, detail="dead letter (%s)" % why)
        self.args = ("dead letter %s: %s" % (message_id or "", why),)


class Timeout(Error, TimeoutError):
    code = -_errno.ETIMEDOUT


class BadArgument(Error, TypeError):
    """A wrong type or value handed to the API (the C side was not called)."""

    code = -_errno.EINVAL


_BY_CODE = {}
_BY_NAME = {}


def _camel(name):
    # BM_ENOAGENT -> NoAgent for the known ones; others by capitalising.
    known = {"PROTO": "Proto", "VERSION": "Version", "FULL": "Full", "CORRUPT": "Corrupt",
             "PEER": "Peer", "NOAGENT": "NoAgent", "TOOBIG": "TooBig", "DENIED": "Denied",
             "NAMETAKEN": "NameTaken", "NOTREG": "NotRegistered", "NOBROKER": "NoBroker",
             "BUSY": "Busy", "READONLY": "ReadOnly", "BADNAME": "BadName",
             "UNSAFEDIR": "UnsafeDir", "RUNNING": "Running", "TTL": "Expired",
             "BADKEY": "BadKey", "NOCURVE": "NoCurve", "HANDLER": "HandlerFailed"}
    return known.get(name, name.capitalize())


def _build():
    code = -30000 + 1
    while True:
        full = ffi.string(lib.bm_err_name(code)).decode()
        if not full.startswith("BM_E"):
            break
        short = full[4:]
        cls = type(_camel(short), (Error,), {"code": code, "__doc__": ffi.string(
            lib.bm_strerror(code)).decode()})
        _BY_CODE[code] = cls
        _BY_NAME[short] = cls
        code += 1
    _BY_CODE[Timeout.code] = Timeout
    _BY_CODE[BadArgument.code] = BadArgument


_build()
globals().update({cls.__name__: cls for cls in _BY_NAME.values()})


class Reject(_BY_NAME["DENIED"]):
    """Raise it in a handler to refuse a message for good: the sender's
    outbox turns it into a dead letter at once ("request denied") instead
    of retrying it."""


def check(rc, detail=None):
    """Raises the error for a negative C return code; returns rc otherwise."""
    if rc >= 0:
        return rc
    raise error_for(rc, detail)


def error_for(rc, detail=None):
    cls = _BY_CODE.get(rc, Error)
    if rc == -_errno.EBUSY and detail:
        detail += " (its journals are open in another agent of this name)"
    return cls(rc, detail=detail)


__all__ = ["Error", "DeadLetter", "Timeout", "BadArgument", "Reject", "check", "error_for"] + \
    [cls.__name__ for cls in _BY_NAME.values()]
