"""tosengine serve: CloudEvents over HTTP into an Engine (docs/serve.md)."""
