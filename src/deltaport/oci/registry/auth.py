"""Registry authentication: WWW-Authenticate challenges, Basic, and Bearer tokens.

A registry answers 401 with a challenge; ``Authenticator.answer`` reacts to it
(Basic: send credentials; Bearer: fetch a token from the realm for the scope) and says
whether the request is worth retrying. Tokens are cached per scope.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import httpx

from deltaport.errors import AuthError, TransferError

MAX_TOKEN_RESPONSE_BYTES = 1 << 20
_PARAM_RE = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    """A parsed WWW-Authenticate header."""

    scheme: str  # "basic" or "bearer" (lowercase)
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """Parse 'Bearer realm="...",service="...",scope="..."' or 'Basic realm="..."'."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _PARAM_RE.finditer(rest)}
    return Challenge(scheme.lower(), params)


def basic_header(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"


class Authenticator:
    """Holds credentials and tokens for one registry host."""

    def __init__(self, host: str, username: str | None, password: str | None) -> None:
        self.host = host
        self._credentials = (username, password or "") if username is not None else None
        self._use_basic = False
        self._tokens: dict[tuple[str, ...], str] = {}

    def headers(self, scope: tuple[str, ...]) -> dict[str, str]:
        """Authorization headers to send for a request needing SCOPE."""
        token = self._tokens.get(scope)
        if token is not None:
            return {"Authorization": f"Bearer {token}"}
        if self._use_basic and self._credentials is not None:
            return {"Authorization": basic_header(*self._credentials)}
        return {}

    def answer(self, response: httpx.Response, scope: tuple[str, ...],
               http: httpx.Client) -> None:
        """Prepare credentials for a retry after the 401 RESPONSE.

        Raises:
            AuthError: no credentials, refused credentials, or no usable challenge.
        """
        header = response.headers.get("www-authenticate", "")
        challenge = parse_challenge(header)
        if challenge.scheme == "basic":
            if self._credentials is None:
                raise AuthError(f"registry {self.host} requires a username and password", 401)
            if self._use_basic:
                raise AuthError(f"registry {self.host} refused the credentials for "
                                f"{self._credentials[0]!r}", 401)
            self._use_basic = True
            return
        if challenge.scheme == "bearer":
            if scope in self._tokens:
                raise AuthError(
                    f"registry {self.host} refused the token for {' '.join(scope)}", 401
                )
            self._tokens[scope] = self._fetch_token(challenge, scope, http)
            return
        raise AuthError(f"registry {self.host} answered 401 without a usable challenge "
                        f"({header or 'none'})", 401)

    def _fetch_token(self, challenge: Challenge, scope: tuple[str, ...],
                     http: httpx.Client) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthError(f"registry {self.host}: Bearer challenge without realm", 401)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in challenge.params:
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", s) for s in scope)
        headers = {}
        if self._credentials is not None:
            headers["Authorization"] = basic_header(*self._credentials)
        try:
            response = http.get(realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise TransferError(f"cannot reach token server {realm}: {exc}") from exc
        if response.status_code in (401, 403):
            who = repr(self._credentials[0]) if self._credentials else "anonymous access"
            raise AuthError(f"token server {realm} refused {who} for {' '.join(scope)}",
                            response.status_code)
        if response.status_code != 200 or len(response.content) > MAX_TOKEN_RESPONSE_BYTES:
            raise AuthError(f"token server {realm} answered {response.status_code}",
                            response.status_code)
        try:
            doc = response.json()
        except ValueError as exc:
            raise AuthError(f"token server {realm} answered no JSON") from exc
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"token server {realm} answered no token")
        return token
