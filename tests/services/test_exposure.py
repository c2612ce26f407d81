"""The Host and Origin rules for a service reached beyond loopback (`Exposure`), next to
the loopback rules they extend (which stay as they were)."""

from __future__ import annotations

from services.auth import (
    Exposure,
    browser_origins,
    host_allowed,
    origin_allowed,
    page_origins,
)
from services.notls import wants_tls
from services.runtime import is_loopback, public_url


def test_the_loopback_rules_are_unchanged():
    assert host_allowed("127.0.0.1:8080", 8080) and host_allowed("LOCALHOST:8080", 8080)
    assert host_allowed("[::1]:8080", 8080)
    assert not host_allowed("127.0.0.1:8081", 8080) and not host_allowed("evil:8080", 8080)
    assert page_origins(8080) == {"http://127.0.0.1:8080", "http://localhost:8080",
                                  "http://[::1]:8080"}  # fmt: skip
    assert browser_origins(8080) == {"http://127.0.0.1:8080", "http://localhost:8080"}
    assert origin_allowed(None, 8080) and origin_allowed("http://localhost:8080", 8080)
    assert not origin_allowed("http://localhost:8081", 8080)
    assert Exposure.local(8080).page_origins() == page_origins(8080)


def test_a_public_bind_accepts_exactly_its_names_with_the_port():
    public = Exposure(8443, ("herald.example.com",), loopback=False, tls=True)
    assert public.host_allowed("herald.example.com:8443")
    assert public.host_allowed("HERALD.example.com:8443")
    for refused in ("127.0.0.1:8443", "localhost:8443", "herald.example.com",
                    "herald.example.com:8444", "evil.example:8443", None, ""):  # fmt: skip
        assert not public.host_allowed(refused), refused
    assert public.page_origins() == {"https://herald.example.com:8443"}
    assert public.browser_origins() == {"https://herald.example.com:8443"}
    names = public.names
    assert origin_allowed("https://herald.example.com:8443", 8443, names, "https", False)
    assert not origin_allowed("http://herald.example.com:8443", 8443, names, "https", False)
    assert not origin_allowed("https://127.0.0.1:8443", 8443, names, "https", False)


def test_a_loopback_bind_with_names_accepts_both():
    both = Exposure(8080, ("herald.lan",), loopback=True)
    assert both.host_allowed("herald.lan:8080") and both.host_allowed("127.0.0.1:8080")
    assert "http://herald.lan:8080" in both.browser_origins()
    assert "http://localhost:8080" in both.browser_origins()


def test_origins_given_for_a_web_on_another_host():
    web = ("https://herald.example.com:8443",)
    assert origin_allowed("https://herald.example.com:8443", None, also=web)
    assert not origin_allowed("http://127.0.0.1:8443", None, also=web)


def test_loopback_addresses_and_public_urls():
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert is_loopback("[::1]") and not is_loopback("0.0.0.0") and not is_loopback("::")
    assert not is_loopback("192.0.2.10")
    assert public_url("https", "0.0.0.0", ("h.example",), 8443) == "https://h.example:8443"
    assert public_url("http", "127.0.0.1", ("h.example",), 80) == "http://127.0.0.1:80"
    assert public_url("ws", "::1", (), 9) == "ws://[::1]:9"


def test_which_services_keep_openssl():
    assert not wants_tls(["--data-dir", "d", "--port", "0"])
    assert wants_tls(["--tls-cert", "c.pem", "--tls-key", "k.pem"])
    assert wants_tls(["--tls-cert=c.pem"])
    assert wants_tls(["--backend", "redis://h:6379/0"]) and wants_tls(["--backend=rediss://h"])
    assert not wants_tls(["--backend", "sqlite"])
