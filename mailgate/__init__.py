"""mailgate: an IMAP, POP3 and SMTP proxy in the manner of nginx's mail module."""

__version__ = "0.1.0"
NAME = "mailgate"
