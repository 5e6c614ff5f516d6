"""Django-free code the control plane, the data plane and the CLI share: token format, key-channel wire."""
