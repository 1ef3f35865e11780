"""REST API /v1: one thin router module per resource."""
