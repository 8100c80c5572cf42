"""The durapod HTTP API (Starlette on uvicorn): stateless, any number of replicas."""
