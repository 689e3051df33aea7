"""The operator web inbox on the operator listener (ADR 0015).

``sessions`` (login sessions in the shared binding store), ``login`` (local
scrypt accounts), ``headers`` (security headers, Origin and CSRF checks),
``webapp`` (the routes, static files and the live queue stream) and ``oidc``
("Sign in with OIDC"). The browser holds the operator's keys; the server
stores and routes ciphertext and accepts only commands the session's
operator signed.
"""
