"""The Tornado server: the API handlers and the process that runs them."""
