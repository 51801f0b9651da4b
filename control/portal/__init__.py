"""The web portal: server-rendered pages (Jinja2) with htmx, served by ``walhook api`` under ``/portal``.

Operators sign in with the admin token and see every organization; an organization's users
arrive through a single-use portal link. Pages call the same store functions as the API.
"""
