"""Fake peers for tests: an auth_http server, mail backends."""
