"""Requests to a cityops daemon's HTTP API, for the Python tests: plain HTTP or HTTPS.

    status, headers, body = request('https://127.0.0.1:8443', '/api/v1/whoami',
                                    token=viewer, ca='/etc/cityops/ca.pem')
    cases = get_json(base, token, '/api/v1/cases', ca=ca)

An https:// base is checked against `ca` (a PEM file: the authority that signed the
daemon's certificate, or a self-signed certificate itself), or the system's authorities
without it; the certificate must name the host of `base`. An error status is returned, not
raised; no answer at all raises OSError (urllib's URLError, ssl's SSLError).

Run as a script, it makes one request and prints the status and the body:

    python3 tests/testing/api_client.py [--ca FILE] [--token T] URL
"""
import argparse
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request


def _context(base, ca):
    if urllib.parse.urlsplit(base).scheme != 'https':
        if ca:
            raise ValueError(f'ca={ca!r} checks an https:// server, but the address is {base}')
        return None
    return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()


def request(base, path, token=None, body=None, ca=None, timeout=10, method=None):
    """(status, headers, body bytes) of one request to `base` + `path`; `body` (a dict or
    bytes) makes it a POST of JSON unless `method` says otherwise."""
    headers = {'Authorization': f'Bearer {token}'} if token else {}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers['Content-Type'] = 'application/json'
    req = urllib.request.Request(base.rstrip('/') + path, data=data, headers=headers,
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_context(base, ca)) as res:
            return res.status, res.headers, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(base, token, path, ca=None, timeout=10):
    """The JSON of a GET that must answer 200."""
    status, _, data = request(base, path, token=token, ca=ca, timeout=timeout)
    if status != 200:
        raise RuntimeError(f'GET {path} answered {status}: {data[:300]!r}')
    return json.loads(data)


def main():
    parser = argparse.ArgumentParser(description='One request to a cityops API.')
    parser.add_argument('url', help='http(s)://HOST:PORT/PATH')
    parser.add_argument('--ca', help='PEM file the https:// server\'s certificate is checked against')
    parser.add_argument('--token', help='API token (Authorization: Bearer)')
    args = parser.parse_args()
    parts = urllib.parse.urlsplit(args.url)
    base = f'{parts.scheme}://{parts.netloc}'
    path = parts.path + (f'?{parts.query}' if parts.query else '')
    status, _, data = request(base, path or '/', token=args.token, ca=args.ca)
    print(status)
    sys.stdout.write(data.decode(errors='replace') + '\n')
    return 0 if 200 <= status < 300 else 1


if __name__ == '__main__':
    sys.exit(main())
