"""Helpers for testing code that uses llmproxy-auth: key pairs, token minting, a loopback JWKS server.

Not for production use: ``mint_token`` signs with a private key held in memory.
"""

from ._helpers import (
    TEST_AUDIENCE,
    TEST_HS_SECRET,
    TEST_ISSUER,
    TEST_TENANT,
    JWKSServer,
    KeyPair,
    b64url,
    generate_ec_key,
    generate_rsa_key,
    mint_token,
)

__all__ = [
    "TEST_AUDIENCE",
    "TEST_HS_SECRET",
    "TEST_ISSUER",
    "TEST_TENANT",
    "JWKSServer",
    "KeyPair",
    "b64url",
    "generate_ec_key",
    "generate_rsa_key",
    "mint_token",
]
