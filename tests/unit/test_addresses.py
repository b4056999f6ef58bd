"""Where webhooks may go: every notation of an inside address refused, the vetted one used."""

from __future__ import annotations

import pytest

from offpost.addresses import (
    AddressRefusedError,
    UnresolvableError,
    check_registration,
    vet,
)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://10.0.0.1/", "private"),
        ("https://192.168.1.10/", "private"),
        ("https://[::1]:18001/x", "loopback"),
        ("https://127.0.0.1:6379/", "loopback"),
        ("https://0.0.0.0:18000/", "unspecified"),
        ("https://2130706433/", "loopback"),  # decimal
        ("https://0x7f000001/", "loopback"),  # hexadecimal
        ("https://017700000001/", "loopback"),  # octal
        ("https://127.1/", "loopback"),  # the short form
        ("https://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6
        ("https://[::ffff:a9fe:a9fe]/", "link-local"),  # the metadata service, mapped and in hex
        ("https://[fd00::1]/", "private"),  # unique-local
        ("https://[fe80::1]/", "link-local"),
        ("https://224.0.0.1/", "multicast"),
        ("https://100.64.0.1/", "non-public"),  # carrier-grade NAT
        ("https://240.0.0.1/", "private-network"),  # reserved: Python counts it private
        ("https://localhost/", "loopback"),  # a name that resolves inside
    ],
)
def test_every_notation_of_an_inside_address_is_refused(url: str, why: str) -> None:
    with pytest.raises(AddressRefusedError, match=why):
        vet(url, allow_private=False)
    with pytest.raises(AddressRefusedError, match=why):
        check_registration(url, allow_private=False)


def test_a_name_that_resolves_inside_is_refused_whatever_else_it_resolves_to() -> None:
    def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    with pytest.raises(AddressRefusedError, match=r"hooks\.example \(127\.0\.0\.1\) is a loopback"):
        vet("https://hooks.example/h", allow_private=False, resolver=resolver)


def test_plain_http_needs_the_operator_setting() -> None:
    with pytest.raises(AddressRefusedError, match="https://"):
        vet("http://localhost:18001/_sandbox/reset", allow_private=False)
    vetted = vet("http://127.0.0.1:9000/hooks?a=b", allow_private=True)
    assert vetted.request_url() == "http://127.0.0.1:9000/hooks?a=b"


def test_a_public_address_is_connected_to_by_address_with_the_name_kept() -> None:
    def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example", 8443)
        return ["2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]

    vetted = vet("https://hooks.example:8443/in?x=1", allow_private=False, resolver=resolver)
    assert vetted.request_url() == "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/in?x=1"
    assert vetted.request_options() == {
        "headers": {"Host": "hooks.example:8443"},
        "extensions": {"sni_hostname": "hooks.example"},
    }


def test_a_name_that_does_not_resolve_is_registered_but_not_delivered_to() -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise UnresolvableError(f"its host {host} does not resolve")

    check_registration("https://not-yet.example/h", allow_private=False, resolver=nowhere)
    with pytest.raises(UnresolvableError):
        vet("https://not-yet.example/h", allow_private=False, resolver=nowhere)
