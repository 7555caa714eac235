"""The embedded TCP store: server (``server``), client (``client.TcpStore``), wire format.

See ``docs/tcp-store.md``. Import the client from ``rdzv.store.tcp.client``; this
package imports nothing on its own so that ``rdzv serve`` stays light.
"""
