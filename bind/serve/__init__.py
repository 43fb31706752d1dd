"""``bindspace serve``: a local web page and JSON API over one or more indexes (an application: the library never
imports it). See :mod:`bind.serve.app` for the API and docs/serve.md for its reference."""
