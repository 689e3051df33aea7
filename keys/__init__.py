"""Key material and cryptography: the only package that imports a crypto library.

Modules (import them directly; this package re-exports nothing, so importing
one does not pull in the others):

* :mod:`keys.material` - Ed25519 / P-256 keys pinned to one algorithm, RFC 7638 kids
* :mod:`keys.keyset` - key sets, rotation, JWKS import/export
* :mod:`keys.files` - 0600 key files, refusal of loose permissions
* :mod:`keys.jose` - strict JWS (compact, general) and JWE (general, ECDH-ES+A256KW/A256GCM)
* :mod:`keys.bearer` - bearer JWT verification for external issuers (PyJWT)
* :mod:`keys.httpsig` - RFC 9421 signatures and RFC 9530 Content-Digest (over :mod:`keys.sfv`)
* :mod:`keys.x509` - the dev certificate authority and SPIFFE peer identities
* :mod:`keys.strictjson`, :mod:`keys.b64` - the strict parsers every inbound byte goes through
* :mod:`keys.errors` - :class:`~keys.errors.KeysError` with the codes of ``protocol/errors.py``
"""
