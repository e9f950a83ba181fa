"""A minimal HTTP server on 127.0.0.1 that hands every POST to a callback:
the event sinks and trace receivers the suites start."""
import http.server
import threading


def serve_posts(on_post):
    """Serves until `.shutdown()`; `on_post(path, headers, body)` returns the
    status to answer (headers by lower-case name). Returns the server and
    its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status = on_post(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
