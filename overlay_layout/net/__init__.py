"""The network side of bankctl: `bankctl stage URL`, `bankctl poll` (a channel on static storage, or a
hawkBit-DDI rollout server) and what `bankctl apply` finds kept, in layers, each usable alone:

    url.py         a URL parsed and checked once (malformed ones are refused naming what is wrong)
    proxy.py       which proxy a URL goes through, from http_proxy / https_proxy / no_proxy as curl reads them
    tls.py         HTTPS: Python's ssl over OpenSSL, loaded from the kit's separately packed TLS piece
    tlspiece.py    that piece's format (the builder writes it, bankctl checks and opens it)
    http.py        one HTTP/1.1 connection, kept alive, with a deadline on every read
    transport.py   a file on a server read by byte ranges: redirects, If-Range, retries, servers without ranges
    bearer.py      bearer tokens for a container registry's blob URL (a bank pushed with publish --oci)
    download.py    staging a bank file from it chunk by chunk, resumably
    downloaded.py  a complete download kept for `bankctl apply`
    document.py    a small file fetched whole, conditional on its ETag (a channel document)
    channel.py     the channel document's format and checks
    ddi.py         hawkBit's Direct Device Integration API, the device side
    swu.py         the .swu container a bank travels in to a hawkBit-DDI server
    errors.py      the errors, each saying whether a retry may help

Integrity never depends on the transport: the signed manifest is checked before a byte is written, and
every byte after it against signed hashes. TLS adds privacy and lets a fleet server know its devices.
Nothing here is imported at boot (tests/unit/test_rooms.py follows the init's imports)."""
