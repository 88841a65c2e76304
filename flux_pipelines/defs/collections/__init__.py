"""Collections: the use-case exports, one cross-agency asset per use case."""
