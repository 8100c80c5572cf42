"""The custom resources: pydantic models (the source) and the CRDs generated from them."""
