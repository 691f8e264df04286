"""Constitutions: the principles critiques, revisions and judgements are made against
(``constitution``: the YAML format, loading and sampling principles) and importing the public
formats users already have (``importers``). The bundled YAML files are in the checkout's
top-level ``constitutions/`` folder."""
