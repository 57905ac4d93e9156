"""One entry point for both credential kinds: API keys (by prefix) and JWTs (everything else)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ._errors import DuplicateAuthorization, InvalidApiKey, InvalidToken, MissingCredentials
from ._jwt import JWTVerifier
from ._principal import Principal
from ._records import DEFAULT_PREFIX
from ._service import ApiKeyService, AsyncApiKeyService

_ONE_HEADER = "Send exactly one Authorization header."


def single_authorization(values: Sequence[bytes]) -> bytes | None:
    """The request's one ``Authorization`` header value (None without one); several are refused
    (:class:`DuplicateAuthorization`): a proxy in front may have read another one than we would."""
    if len(values) > 1:
        raise DuplicateAuthorization(_ONE_HEADER)
    return values[0] if values else None


def bearer_token(authorization: str | bytes | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    if not authorization or not authorization.strip():
        raise MissingCredentials("You didn't provide an API key or token (Authorization: Bearer ...).")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidToken("Use the Bearer authorization scheme (Authorization: Bearer ...).")
    if "," in token:
        # A bearer token (RFC 6750's b64token) holds no comma: this is several Authorization headers that
        # a server folded into one value (WSGI servers do: "Bearer a,Bearer b"), or a list of tokens.
        raise DuplicateAuthorization(_ONE_HEADER)
    return token


class Authenticator:
    """Verifies a bearer token with the API key service or the JWT verifier (either may be left out).

    ``api_keys`` may be sync or async: :meth:`authenticate` needs a sync service, :meth:`aauthenticate` runs a
    sync one in a worker thread (prefer :class:`AsyncApiKeyService` in async apps).
    """

    def __init__(
        self,
        *,
        jwt: JWTVerifier | None = None,
        api_keys: ApiKeyService | AsyncApiKeyService | None = None,
        api_key_prefix: str | None = None,
    ) -> None:
        if jwt is None and api_keys is None:
            raise ValueError("an Authenticator needs a JWT verifier, an API key service, or both")
        self.jwt = jwt
        self.api_keys = api_keys
        self.api_key_prefix = api_key_prefix or (api_keys.prefix if api_keys is not None else DEFAULT_PREFIX)

    def is_api_key(self, token: str) -> bool:
        return token.startswith(self.api_key_prefix)

    def authenticate(self, token: str) -> Principal:
        if self.is_api_key(token):
            if self.api_keys is None:
                raise InvalidApiKey("API keys are not accepted here.")
            if isinstance(self.api_keys, AsyncApiKeyService):
                raise TypeError("this Authenticator has an AsyncApiKeyService: use aauthenticate()")
            return self.api_keys.verify(token)
        if self.jwt is None:
            raise InvalidApiKey("Incorrect API key provided.")
        return self.jwt.verify(token)

    async def aauthenticate(self, token: str) -> Principal:
        if self.is_api_key(token):
            if self.api_keys is None:
                raise InvalidApiKey("API keys are not accepted here.")
            if isinstance(self.api_keys, AsyncApiKeyService):
                return await self.api_keys.verify(token)
            return await asyncio.to_thread(self.api_keys.verify, token)
        if self.jwt is None:
            raise InvalidApiKey("Incorrect API key provided.")
        return await self.jwt.averify(token)

    def authenticate_header(self, authorization: str | bytes | None) -> Principal:
        """Verify the value of an ``Authorization`` header."""
        return self.authenticate(bearer_token(authorization))

    async def aauthenticate_header(self, authorization: str | bytes | None) -> Principal:
        return await self.aauthenticate(bearer_token(authorization))
