"""The local stack: an embedded broker, an MLflow server and the services, as child processes."""
