"""How `kube.creates` reads an API client's configuration, before any request is made."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubewrit.webhook.kube.creates import Creates, UnsupportedConfiguration, _endpoint


def test_without_a_tls_server_name_the_configured_host_is_requested_directly():
    assert _endpoint("https://10.0.0.1:6443/", None) == ("https://10.0.0.1:6443", None)


def test_a_tls_server_name_is_requested_and_connected_to_the_configured_host():
    assert _endpoint("https://10.0.0.1:6443", "kubernetes") == (
        "https://kubernetes:6443",
        "kubernetes:6443:10.0.0.1:6443",
    )


def test_an_ipv6_host_behind_a_tls_server_name_keeps_its_brackets_and_default_port():
    assert _endpoint("https://[fd00::1]", "api.example") == (
        "https://api.example:443",
        "api.example:443:[fd00::1]:443",
    )


@pytest.mark.parametrize("setting", ["socket_options", "proxy_ssl_context"])
def test_a_setting_libcurl_cannot_honour_is_refused_when_built(setting):
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    setattr(configuration, setting, object())
    with pytest.raises(UnsupportedConfiguration, match=setting):
        Creates(configuration, "kubewrit-test")
