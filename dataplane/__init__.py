"""The data plane: mitmproxy credential-mediation proxy and credential service. Imports no Django (issue 5)."""
