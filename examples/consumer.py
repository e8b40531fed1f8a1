#!/usr/bin/env python3
"""Example consumer of acme-bridge's JSON-lines protocol (version 1).

    python3 examples/consumer.py --challtestsrv http://127.0.0.1:8055 -- \
        acme-bridge issue -d example.test --challenge dns-01 ...

It runs the command after "--", reads its stdout one JSON object per line, publishes
every challenge through pebble-challtestsrv's management API (Pebble's mock DNS and
HTTP/TLS responders), answers "ready" (or "failed"), and removes what it published when
acme-bridge sends "cleanup". To use a real DNS provider, rewrite publish() and
unpublish(): they are the only parts that know about pebble-challtestsrv.

It works unchanged for "acme-bridge renew": several certificates' runs then interleave
on one stdout, each message names its certificate, and replies are routed by their id.

Output: progress and errors on stderr. Each "certificate" message is printed
on stdout as one JSON line (paths, serial, dates), so a script can capture it; stdout is
empty otherwise. Exit status: the command's own (see acme-bridge's exit codes).
Python 3.11+ standard library only.
"""

import argparse
import json
import signal
import subprocess
import sys
import urllib.request

PROTOCOL = 1


def log(msg):
    print(f"consumer: {msg}", file=sys.stderr, flush=True)


def api(base, path, body):
    """POST a JSON body to pebble-challtestsrv's management API; raises on failure."""
    req = urllib.request.Request(base.rstrip("/") + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def publish(base, ch):
    """Make one challenge visible to the CA. Returns a key that unpublish() understands."""
    kind = ch["challenge_type"]
    if kind == "dns-01":
        # name is the full name with a trailing dot ("_acme-challenge.example.test.").
        # Repeated /set-txt calls APPEND values: a wildcard and its apex share one name
        # and both TXT values must be visible at the same time.
        api(base, "/set-txt", {"host": ch["dns"]["name"], "value": ch["dns"]["value"]})
        return ("dns-01", ch["dns"]["name"])
    if kind == "http-01":
        api(base, "/add-http01", {"token": ch["token"], "content": ch["http"]["body"]})
        return ("http-01", ch["token"])
    if kind == "tls-alpn-01":
        # pebble-challtestsrv builds the certificate itself from the key authorization; a
        # real server would use tls_alpn.certificate_pem / private_key_pem instead.
        api(base, "/add-tlsalpn01", {"host": ch["identifier"], "content": ch["key_authorization"]})
        return ("tls-alpn-01", ch["identifier"])
    raise ValueError(f"unsupported challenge type {kind!r}")


def unpublish(base, key):
    kind, what = key
    if kind == "dns-01":
        # NOTE: /clear-txt removes ALL TXT values of the name, not just ours. main() only
        # calls it once the last challenge using the name is cleaned up. With a real DNS
        # API, delete exactly the value from the cleanup message instead.
        api(base, "/clear-txt", {"host": what})
    elif kind == "http-01":
        api(base, "/del-http01", {"token": what})
    elif kind == "tls-alpn-01":
        api(base, "/del-tlsalpn01", {"host": what})


def describe_error(msg):
    text = f"{msg.get('kind', '?')} error: {msg.get('message', '')}"
    if msg.get("id"):
        text += f" (challenge {msg['id']})"
    problem = msg.get("problem") or {}
    if problem:
        text += f"\n  CA problem {problem.get('type', '')}: {problem.get('detail', '')}"
    for sub in problem.get("subproblems") or []:
        ident = (sub.get("identifier") or {}).get("value", "?")
        text += f"\n    {ident}: {sub.get('type', '')}: {sub.get('detail', '')}"
    return text


def main():
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        usage="%(prog)s [--challtestsrv URL] -- acme-bridge issue ARGS...",
        description="Example consumer of acme-bridge's JSON-lines protocol.")
    parser.add_argument("--challtestsrv", metavar="URL", default="http://127.0.0.1:8055",
                        help="pebble-challtestsrv management API URL (default %(default)s)")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("give the acme-bridge command after --")

    try:
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, encoding="utf-8")
    except OSError as e:
        log(f"cannot run {command[0]}: {e}")
        return 127
    # Ctrl-C reaches acme-bridge too (same process group): it then cleans up and exits 5.
    # Keep reading so we still remove what we published. Forward SIGTERM the same way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())

    def reply(obj):
        try:
            child.stdin.write(json.dumps(obj) + "\n")
            child.stdin.flush()
        except (BrokenPipeError, ValueError):
            log(f"could not answer {obj.get('id')}: acme-bridge stopped reading")

    published = {}  # challenge id -> key for unpublish()
    compatible = True
    for line in child.stdout:
        try:
            msg = json.loads(line)
            kind = msg["type"]
        except (ValueError, TypeError, KeyError):
            log(f"ignoring a line that is not a protocol message: {line.rstrip()!r}")
            continue
        if not compatible:
            continue
        if kind == "hello":
            if msg.get("protocol") != PROTOCOL:
                # Do not guess: close stdin; acme-bridge then fails the run and cleans up.
                log(f"unsupported protocol {msg.get('protocol')!r} (this consumer speaks {PROTOCOL})")
                compatible = False
                child.stdin.close()
                continue
            log(f"{msg.get('program')} {msg.get('version')}: certificate {msg.get('name')!r} "
                f"for {', '.join(msg.get('domains', []))} using {msg.get('challenge_type')}")
        elif kind == "challenge":
            cid = msg["id"]
            try:
                published[cid] = publish(args.challtestsrv, msg)
            except Exception as e:  # anything: the CA must not be asked to validate
                log(f"{cid} {msg.get('domain')}: publishing failed: {e}")
                reply({"type": "failed", "id": cid, "reason": f"publishing failed: {e}"})
                continue
            log(f"{cid} {msg.get('domain')}: published {msg['challenge_type']}, ready")
            reply({"type": "ready", "id": cid})
        elif kind == "awaiting":
            log(f"acme-bridge is waiting for the CA to validate {', '.join(msg.get('ids', []))}")
        elif kind == "cleanup":
            key = published.pop(msg.get("id"), None)
            log(f"{msg.get('id')} {msg.get('domain')}: cleanup (outcome {msg.get('outcome')})")
            if key is None or key in published.values():
                continue  # never published, or the name is still used by another challenge
            try:
                unpublish(args.challtestsrv, key)
            except Exception as e:
                log(f"{msg.get('id')}: cleanup failed (remove it by hand): {e}")
        elif kind == "certificate":
            log(f"certificate {msg.get('name')!r} version {msg.get('version')} serial "
                f"{msg.get('serial')}, valid {msg.get('not_before')} .. {msg.get('not_after')}")
            log(f"  fullchain {msg.get('fullchain_path')}, key {msg.get('key_path')}")
            print(json.dumps(msg), flush=True)
        elif kind == "error":
            log(("fatal " if msg.get("fatal") else "") + describe_error(msg))
        # Unknown message types (newer acme-bridge versions) are ignored on purpose.

    if child.stdin and not child.stdin.closed:
        try:
            child.stdin.close()
        except BrokenPipeError:
            pass
    code = child.wait()
    return code if code >= 0 else 128 - code  # killed by a signal: shell convention


if __name__ == "__main__":
    sys.exit(main())
