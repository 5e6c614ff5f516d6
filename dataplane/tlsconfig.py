"""mitmproxy's TLS setup, with each client's certificate minted by its own session's CA."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import tls
from mitmproxy.addons.tlsconfig import TlsConfig, _ip_or_dns_name
from mitmproxy.certs import CertStoreEntry
from mitmproxy.proxy import context

if TYPE_CHECKING:
    from dataplane.proxy import AileronProxy


class SessionTlsConfig(TlsConfig):
    """mitmproxy's TLS setup, with each client's certificate minted by its own session's CA."""

    def __init__(self, proxy: AileronProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def configure(self, updated: set[str]) -> None:
        super().configure(updated)  # type: ignore[no-untyped-call]
        if getattr(self, "certstore", None) is not None:
            self.proxy.sessions.dhparams = self.certstore.dhparams

    def get_cert(self, conn_context: context.Context) -> CertStoreEntry:
        store = self.proxy.certstore_for(conn_context.client.id)
        tunnel = self.proxy.tunnels[conn_context.client.id]
        name = conn_context.client.sni or tunnel.host
        return store.get_cert(name, [_ip_or_dns_name(name)], "Aileron")

    def tls_start_client(self, tls_start: tls.TlsData) -> None:
        if tls_start.context.client.id not in self.proxy.tunnels:
            raise ConnectionError("aileron: TLS without an authenticated tunnel")
        super().tls_start_client(tls_start)
