"""`relay web`: a read-only console for auditors, petition officers and administrators.

Server-rendered (Starlette + Jinja2, served by uvicorn), no JavaScript, on the same
database as the relay, so every relay node can serve it. `app` builds the routes,
`auth` the accounts, sessions and CSRF, `mailview` renders archived messages in a
separate process, `integrity` runs `verify` with progress, `health` the admin page.
"""
