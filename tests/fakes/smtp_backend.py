"""A small ESMTP server to stand behind mailgate in tests and demos.

It records every command line it receives and every message delivered (the
envelope, the XCLIENT attributes and HELO in force, the AUTH login, and the
data exactly as received after dot-unstuffing)::

    with SmtpBackend(rcpt_replies={"<nobody@x>": "550 5.1.1 no such user"}) as backend:
        ...  # send mail through mailgate
        message = backend.wait_for_messages(1)[0]
        assert message.xclient["LOGIN"] == "alice"

It understands EHLO/HELO, XCLIENT (answered with the greeting, as Postfix
does; the session starts over), AUTH PLAIN, MAIL FROM, RCPT TO, DATA, RSET,
NOOP and QUIT; anything else gets ``502 5.5.2 Error: command not
recognized``. ``replies`` overrides the reply to any verb (``{"MAIL": "451
4.3.0 try later"}``); the command is then not carried out unless the reply is
2xx.

Message data is read in large chunks and searched incrementally, so a 20 MB
message takes well under a second. Like ``tests.fakes.imap_backend`` (whose
``LoopServer`` it uses) it serves every connection from one ``selectors``
thread and takes a PROXY protocol header off the start of a connection.

Run it alone for a first login through mailgate:

    python -m tests.fakes.smtp_backend --port 11025
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
from collections.abc import Generator
from dataclasses import dataclass, field

from tests.fakes.imap_backend import LINE, Connection, LoopServer, Request, Session, Until, _as_bytes, _strip_eol, _text

PATH = re.compile(r"^(?P<verb>MAIL\s+FROM|RCPT\s+TO)\s*:\s*(?P<path><[^>]*>|\S*)\s*(?P<params>.*)$", re.IGNORECASE)
DATA_END = Until(b"\r\n.\r\n", at_start=b".\r\n")


@dataclass
class DeliveredMessage:
    """One message accepted after DATA."""

    mail_from: str  # the reverse path as sent, with its angle brackets: "<a@b>"
    rcpt_to: list[str]  # accepted forward paths, "<c@d>"
    data: bytes = field(repr=False)  # dot-unstuffed, through the CRLF before the final "."
    xclient: dict[str, str]  # attributes of the last XCLIENT, values as sent (xtext)
    helo: str | None  # argument of the last HELO/EHLO
    login: str | None  # login of a successful AUTH PLAIN
    mail_params: str = ""  # whatever followed the reverse path ("SIZE=10 BODY=8BITMIME")
    session: int = 0  # number of the connection it came on


@dataclass
class SmtpSession(Session):
    helo: str | None = None
    esmtp: bool = False  # the last greeting was EHLO
    xclient: dict[str, str] = field(default_factory=dict)
    xclient_raw: bytes | None = None  # the last XCLIENT line exactly as received
    login: str | None = None
    mail_from: str | None = None
    mail_params: str = ""
    rcpt_to: list[str] = field(default_factory=list)


@dataclass
class SmtpBackend(LoopServer):
    """An ESMTP server on 127.0.0.1 (``port`` 0 picks a free one)."""

    users: dict[str, str] = field(default_factory=lambda: {"alice": "wonderland"})
    port: int = 0
    host: str = "127.0.0.1"
    greeting: bytes = b"220 fake.backend ESMTP\r\n"  # may hold several lines (220-...)
    ehlo_lines: list[str] = field(
        default_factory=lambda: ["fake.backend", "PIPELINING", "8BITMIME", "XCLIENT ADDR LOGIN NAME", "AUTH PLAIN"]
    )
    helo_reply: str = "250 fake.backend"
    xclient_reply: bytes = b"220 fake.backend ESMTP\r\n"
    auth_ok_reply: str = "235 2.7.0 Authentication successful"
    auth_fail_reply: str = "535 5.7.8 bad"
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # "<nobody@x>" -> "550 5.1.1 no such user"
    replies: dict[str, str] = field(default_factory=dict)  # verb -> reply, overriding the normal one
    require_auth: bool = False  # MAIL needs AUTH or XCLIENT LOGIN= first
    accept_proxy_protocol: bool = True
    lines: list[bytes] = field(default_factory=list, repr=False)
    messages: list[DeliveredMessage] = field(default_factory=list, repr=False)
    xclients: list[dict[str, str]] = field(default_factory=list)  # every XCLIENT, in order
    sessions: list[SmtpSession] = field(default_factory=list, repr=False)
    proxy_headers: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connections: int = 0
    sessions_open: int = 0

    def __post_init__(self) -> None:
        self.greeting = _as_bytes(self.greeting)
        self.xclient_reply = _as_bytes(self.xclient_reply)
        self._open_listener()

    def wait_for_messages(self, count: int = 1, timeout: float = 10.0) -> list[DeliveredMessage]:
        self.wait_for(lambda: len(self.messages) >= count, timeout,
                      f"{count} messages (have {len(self.messages)})")
        return list(self.messages)

    def wait_for_lines(self, count: int, timeout: float = 10.0) -> list[bytes]:
        self.wait_for(lambda: len(self.lines) >= count, timeout, f"{count} lines (have {len(self.lines)})")
        return list(self.lines)

    def clear(self) -> None:
        super().clear()

        def clear() -> None:
            self.messages.clear()
            self.xclients.clear()

        self.call(clear)

    # --- the dialogue -----------------------------------------------------------

    def _new_session(self, number: int, peer: tuple[str, int]) -> SmtpSession:
        return SmtpSession(number, peer)

    def _session(self, conn: Connection) -> Generator[Request, bytes, None]:
        conn.write(self.greeting)
        session: SmtpSession = conn.session
        while True:
            raw = yield LINE
            self._record(conn, raw)
            line = _text(_strip_eol(raw))
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            override = self.replies.get(verb)
            if override is not None and not override.startswith("2") and verb != "QUIT":
                self._reply(conn, override)  # refused: nothing is carried out
                continue
            handler = getattr(self, "_smtp_" + verb.lower(), None) if verb.isalpha() else None
            if handler is None:
                self._reply(conn, "502 5.5.2 Error: command not recognized")
                continue
            result = handler(conn, session, arg.strip(), raw, override)
            if isinstance(result, Generator):
                yield from result
            if conn.closing:
                return

    @staticmethod
    def _reply(conn: Connection, reply: str | None, default: str = "") -> None:
        text = reply if reply is not None else default
        if text:
            conn.write(text.encode("utf-8", "surrogateescape") + (b"" if text.endswith("\n") else b"\r\n"))

    @staticmethod
    def _reset(session: SmtpSession) -> None:
        session.mail_from = None
        session.mail_params = ""
        session.rcpt_to = []

    def _smtp_ehlo(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes, override: str | None) -> None:
        if not arg:
            return self._reply(conn, "501 5.5.4 Syntax: EHLO hostname")
        session.helo, session.esmtp = arg, True
        self._reset(session)
        if override is not None:
            return self._reply(conn, override)
        lines = self.ehlo_lines or ["fake.backend"]
        conn.write(b"".join(
            ("250-" if i < len(lines) - 1 else "250 ").encode() + line.encode() + b"\r\n" for i, line in enumerate(lines)
        ))
        return None

    def _smtp_helo(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes, override: str | None) -> None:
        if not arg:
            return self._reply(conn, "501 5.5.4 Syntax: HELO hostname")
        session.helo, session.esmtp = arg, False
        self._reset(session)
        return self._reply(conn, override, self.helo_reply)

    def _smtp_xclient(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes, override: str | None) -> None:
        attributes: dict[str, str] = {}
        for item in arg.split():
            name, equals, value = item.partition("=")
            if not equals:
                return self._reply(conn, "501 5.5.4 Bad XCLIENT attribute syntax: " + item)
            attributes[name.upper()] = value
        session.xclient, session.xclient_raw = attributes, raw
        self.xclients.append(attributes)
        session.helo, session.esmtp, session.login = None, False, None
        self._reset(session)
        if override is not None:
            return self._reply(conn, override)
        conn.write(self.xclient_reply)
        return None

    def _smtp_auth(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes,
                   override: str | None) -> Generator[Request, bytes, None]:
        mechanism, _, initial = arg.partition(" ")
        if session.login is not None:
            self._reply(conn, "503 5.5.1 Error: already authenticated")
            return
        if mechanism.upper() != "PLAIN":
            self._reply(conn, "504 5.5.4 Unrecognized authentication type")
            return
        response = initial.strip()
        if not response:
            conn.write(b"334 \r\n")
            line = yield LINE
            self._record(conn, line)
            response = _text(_strip_eol(line)).strip()
        if response == "*":
            self._reply(conn, "501 5.7.0 Authentication aborted")
            return
        try:
            _authzid, login, password = base64.b64decode(response, validate=True).split(b"\0")
        except (binascii.Error, ValueError):
            self._reply(conn, "501 5.5.2 Cannot decode response")
            return
        name, secret = _text(login), _text(password)
        if name in self.users and self.users[name] == secret:
            session.login = name
            self._reply(conn, override, self.auth_ok_reply)
        else:
            self._reply(conn, self.auth_fail_reply)

    def _smtp_mail(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes, override: str | None) -> None:
        match = PATH.match(_text(_strip_eol(raw)))
        if match is None or not match.group("verb").upper().startswith("MAIL"):
            return self._reply(conn, "501 5.5.4 Syntax: MAIL FROM:<address>")
        if session.mail_from is not None:
            return self._reply(conn, "503 5.5.1 Error: nested MAIL command")
        if self.require_auth and session.login is None and not session.xclient.get("LOGIN"):
            return self._reply(conn, "530 5.7.0 Authentication required")
        session.mail_from, session.mail_params, session.rcpt_to = match.group("path"), match.group("params"), []
        return self._reply(conn, override, "250 2.1.0 Ok")

    def _smtp_rcpt(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes, override: str | None) -> None:
        match = PATH.match(_text(_strip_eol(raw)))
        if match is None or not match.group("verb").upper().startswith("RCPT"):
            return self._reply(conn, "501 5.5.4 Syntax: RCPT TO:<address>")
        if session.mail_from is None:
            return self._reply(conn, "503 5.5.1 Error: need MAIL command")
        path = match.group("path")
        reply = override or self.rcpt_replies.get(path) or "250 2.1.5 Ok"
        if reply.startswith("2"):
            session.rcpt_to.append(path)
        return self._reply(conn, reply)

    def _smtp_data(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes,
                   override: str | None) -> Generator[Request, bytes, None]:
        if session.mail_from is None:
            self._reply(conn, "503 5.5.1 Error: need MAIL command")
            return
        if not session.rcpt_to:
            self._reply(conn, "554 5.5.1 Error: no valid recipients")
            return
        self._reply(conn, override, "354 End data with <CR><LF>.<CR><LF>")
        body = yield DATA_END
        self.messages.append(DeliveredMessage(
            mail_from=session.mail_from,
            rcpt_to=list(session.rcpt_to),
            data=dot_unstuff(body[:-3]),
            xclient=dict(session.xclient),
            helo=session.helo,
            login=session.login,
            mail_params=session.mail_params,
            session=session.number,
        ))
        self._reset(session)
        self._reply(conn, f"250 2.0.0 queued as {len(self.messages)}")

    def _smtp_rset(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes, override: str | None) -> None:
        self._reset(session)
        return self._reply(conn, override, "250 2.0.0 Ok")

    def _smtp_noop(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes, override: str | None) -> None:
        return self._reply(conn, override, "250 2.0.0 Ok")

    def _smtp_quit(self, conn: Connection, session: SmtpSession, arg: str, raw: bytes, override: str | None) -> None:
        self._reply(conn, override, "221 2.0.0 Bye")
        conn.close_when_flushed()


def dot_unstuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: a line starting with '.' loses that first dot."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")


def xtext_decode(value: str) -> str:
    """Undo XCLIENT's xtext (``go+20od+2Bx+3D`` -> ``go od+x=``)."""
    raw = re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A demo SMTP backend for mailgate.")
    parser.add_argument("--port", type=int, default=11025)
    parser.add_argument("--user", action="append", default=[], help="login:password for AUTH PLAIN (repeatable)")
    args = parser.parse_args(argv)
    users = dict(entry.split(":", 1) for entry in args.user) or {"alice": "wonderland"}
    backend = SmtpBackend(users=users, port=args.port)
    print(f"demo SMTP backend on 127.0.0.1:{backend.port}", flush=True)
    backend.serve_forever()


if __name__ == "__main__":
    main()
