"""The gateway: the FastAPI app, REST API /v1, auth and tenancy, prediction serving."""
