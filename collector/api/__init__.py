"""The collector's HTTP API: :func:`collector.api.app.create_app`, one router module per resource."""
