"""The playground: one self-contained page at `/` (HTML, CSS and JavaScript inline; nothing from other hosts).

The page is a small code editor that asks the server's own `/v1/completions` for a suggestion after a pause
in typing, with the text after the cursor as the `suffix`, and shows it as grey ghost text (Tab accepts,
Escape dismisses). It needs no key to load; when the API answers 401 it asks for one and keeps it in the
tab's sessionStorage. Its Content-Security-Policy lets it reach nothing but this server.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from starlette.responses import HTMLResponse

router = APIRouter()
PATH = "/"
# Inline script and style only; requests only to this origin; no frames, plugins, forms posting elsewhere.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
       "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}


@cache
def page() -> bytes:
    """The page's bytes, read once from the package data (serve/static/playground.html)."""
    return resources.files("codekiln.serve").joinpath("static", "playground.html").read_bytes()


@router.get(PATH, include_in_schema=False)
async def playground() -> HTMLResponse:
    """The playground page; needs no API key (the completions it asks for do, when the server has keys)."""
    return HTMLResponse(page(), headers=HEADERS)
