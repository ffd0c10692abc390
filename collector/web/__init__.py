"""The facility managers' web app, served by the collector at ``/``: server-rendered pages (Jinja2) over the
same ledger, alert store and report code as the JSON API, Vietnamese by default with an English switch."""
