"""Docker HEALTHCHECK: healthy when /ping answers 2xx within Immich's availability timeout (2 s)."""

import os
import sys
import urllib.request

ANY_ADDRESS = ("", "[::]", "::", "0.0.0.0")


def ping_url() -> str:
    host = os.environ.get("IMMICH_HOST", "")
    host = "localhost" if host in ANY_ADDRESS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{os.environ.get('IMMICH_PORT', '3003')}/ping"


def main() -> int:
    try:
        with urllib.request.urlopen(ping_url(), timeout=2) as response:
            return 0 if 200 <= response.status < 300 else 1
    except OSError as exc:
        print(f"{ping_url()}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
