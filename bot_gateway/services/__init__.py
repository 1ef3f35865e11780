"""The gateway's services: what routers and the conversation runtime call. A router reads the
request, calls one service and shapes the response; services own the SQL, the storage and the
delivery, and never import a router."""
