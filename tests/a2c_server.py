#!/usr/bin/env python3
"""Serve acme2certifier's WSGI application over HTTPS on 127.0.0.1, for the tests.

acme2certifier's own entry point binds 0.0.0.0:80 without TLS; this launcher serves the
same WSGI application (``acme2certifier.share.acme2certifier_wsgi:application``) with the
standard library only: wsgiref, one thread per connection, TLS from ``ssl``, and
``HTTPS=on`` in every WSGI environment so that the URLs acme2certifier builds say
``https://``.

    a2c_server.py --config acme_srv.cfg --cert server.pem --key server.key \
        [--port 0] [--port-file FILE]

Run it with the Python of the virtual environment acme2certifier is installed in
(``bash tests/all.sh prerequisites`` makes one). ``--port 0`` (the default) lets the
kernel pick a free port. Once the socket is bound, the port is written to
``--port-file`` (atomically: a temporary file, then a rename) and one line
``a2c_server: listening on https://127.0.0.1:PORT/directory`` goes to stderr.

The server exits on SIGTERM or SIGINT, and by itself when the process that started it
dies (its parent process id changes), so a crashed test never leaves it behind.
"""

import argparse
import os
import signal
import socketserver
import ssl
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="acme_srv.cfg to load")
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free)")
    parser.add_argument("--port-file", help="write the bound port here")
    return parser.parse_args()


class Handler(WSGIRequestHandler):
    """wsgiref's handler, with HTTPS=on, no reverse DNS and quiet TLS failures."""

    def get_environ(self):
        env = super().get_environ()
        env["HTTPS"] = "on"  # wsgiref derives wsgi.url_scheme = https from it
        return env

    def address_string(self):
        return self.client_address[0]

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        sys.stderr.write(
            "%s a2c_server: %s %s\n"
            % (time.strftime("%H:%M:%S"), self.address_string(), format % args)
        )


class ThreadingTLSServer(socketserver.ThreadingMixIn, WSGIServer):
    """A WSGIServer that handles each connection in its own thread, over TLS.

    The TLS handshake runs in the connection's thread (not in accept()), so a client
    that connects and says nothing cannot stall the others.
    """

    daemon_threads = True
    tls_context = None

    def finish_request(self, request, client_address):
        request.settimeout(60)
        tls = self.tls_context.wrap_socket(request, server_side=True)
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        kind, value, _ = sys.exc_info()
        sys.stderr.write(
            "a2c_server: connection from %s failed: %s: %s\n"
            % (client_address[0], getattr(kind, "__name__", kind), value)
        )


def watch_parent(parent):
    """Exit as soon as the process that started us is gone."""
    while True:
        if os.getppid() != parent:
            sys.stderr.write("a2c_server: parent process exited; stopping\n")
            sys.stderr.flush()
            os._exit(0)
        time.sleep(0.5)


def write_port_file(path, port):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as out:
        out.write(f"{port}\n")
    os.replace(tmp, path)


def main():
    args = parse_args()
    parent = os.getppid()
    threading.Thread(target=watch_parent, args=(parent,), daemon=True).start()

    def stop(signum, _frame):
        sys.stderr.write(f"a2c_server: signal {signum}; stopping\n")
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    # acme2certifier reads its configuration when the module is imported.
    os.environ["ACME_SRV_CONFIGFILE"] = os.path.abspath(args.config)
    from acme2certifier.share.acme2certifier_wsgi import application  # noqa: E402

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])

    server = ThreadingTLSServer((args.host, args.port), Handler)
    server.tls_context = context
    server.set_app(application)
    port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    sys.stderr.write(f"a2c_server: listening on https://{args.host}:{port}/directory\n")
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
